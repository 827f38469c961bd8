"""Event routing to channels: match expressions, conditions, channel formats and delivery."""

from halswarm.supervisor.notify.feed import EventFeed
from halswarm.supervisor.notify.router import Router, parse_routes
from halswarm.supervisor.notify.settings import NotifySettings

__all__ = ["EventFeed", "NotifySettings", "Router", "parse_routes"]
