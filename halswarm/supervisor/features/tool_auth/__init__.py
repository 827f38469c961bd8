"""Tool auth of agents: the credentials and logins of the coding tools (claude_code, codex, opencode) on
each node. Drift of a node's ``credential_version`` from ``credentials.version``, pushing the configured
credentials, and the OAuth trigger of a tool's login.

Not the caller checks of the supervisor (``supervisor/security.py``) nor the operator identities and
roles (``core/roles.py``)."""
