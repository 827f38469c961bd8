"""Alerts: Alertmanager's webhook drives remediation (issue 18)."""
