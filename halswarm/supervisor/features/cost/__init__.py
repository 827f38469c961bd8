"""Cost: provider usage/cost reports, agent-reported usage, estimates, the period report and its API."""
