"""ChatOps: Discord slash commands over the Interactions Endpoint URL (issue 20)."""
