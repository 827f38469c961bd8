"""Event routing to channels: match expressions, conditions, channel formats and delivery."""

from halswarm.supervisor.notify.feed import EventFeed
from halswarm.supervisor.notify.router import Router, parse_routes

__all__ = ["EventFeed", "Router", "parse_routes"]
