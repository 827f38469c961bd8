"""Cost tracking: provider usage/cost reports, agent-reported usage, estimates and the period report."""

from halswarm.supervisor.costs.aggregator import CostAggregator
from halswarm.supervisor.costs.report import PERIOD_DAYS, BadPeriod, build_report, empty_report

__all__ = ["PERIOD_DAYS", "BadPeriod", "CostAggregator", "build_report", "empty_report"]
