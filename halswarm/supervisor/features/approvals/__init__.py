"""Approvals: agents' pending permission requests, answered by operators or by the timeout policy."""
