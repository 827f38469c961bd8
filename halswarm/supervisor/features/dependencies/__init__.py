"""Dependencies between sessions: what waits on what."""
