"""Policies: the automatic interventions (resume on idle, kill on cost, ...) and their state."""
