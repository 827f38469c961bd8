"""hal-supervisor: the hub agents connect to, and the HTTP API operators use."""
