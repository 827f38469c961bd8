"""Runbook remediations (SPEC 8): the catalog, pure planners (facts -> plan) and the JSON report."""
