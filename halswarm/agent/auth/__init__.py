"""Tool authentication on the agent: detection, device-code logins, pushed credentials.

Wiring (agent app)::

    auth = AuthService(cfg, conn.send_frame, self._current_client, emit_event=..., restart_opencode=...)
    auth.start(); ... await auth.stop()
    handlers = auth.handlers()         # auth_refresh, oauth_trigger, credential_push (+ Go aliases)
    capabilities["auth"] = auth.snapshot()
    on_ready=auth.on_ready             # SupervisorConnection callback: resend state + credential_sync
"""

from halswarm.agent.auth.model import ToolAuth
from halswarm.agent.auth.runner import RunAs
from halswarm.agent.auth.service import AuthService, opencode_restarter
from halswarm.core.auth_capability import CAPABILITIES, STATUSES, TOOL_IDS, manual_guidance, manual_required

__all__ = [
    "CAPABILITIES",
    "STATUSES",
    "TOOL_IDS",
    "AuthService",
    "RunAs",
    "ToolAuth",
    "manual_guidance",
    "manual_required",
    "opencode_restarter",
]
