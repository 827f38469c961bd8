"""Event routing to channels: match expressions, conditions, channel formats and delivery."""

from halswarm.supervisor.routes.feed import EventFeed
from halswarm.supervisor.routes.router import Router, parse_routes

__all__ = ["EventFeed", "Router", "parse_routes"]
