"""Remediations: stored runbook reports (HTTP) and the automatic runs of `remediation.auto`."""
