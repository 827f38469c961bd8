"""Retention: the periodic purge of old events, audit rows and expired idempotency entries."""
