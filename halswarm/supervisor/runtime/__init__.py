"""What runs the fleet connection: hub, ingest, dispatcher, session tracker, command runner."""
