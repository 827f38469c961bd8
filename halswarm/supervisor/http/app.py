"""`build_app`: the FastAPI app of the supervisor, one router per feature, in a fixed order."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from prometheus_client import Histogram

from halswarm import __version__
from halswarm.supervisor.apikit.envelope import STATUS_BY_CODE
from halswarm.supervisor.apikit.registry import Services
from halswarm.supervisor.features.alerts.api import router as alerts_router
from halswarm.supervisor.features.approvals.api import router as approvals_router
from halswarm.supervisor.features.audit.api import router as audit_router
from halswarm.supervisor.features.chat.api import router as chat_router
from halswarm.supervisor.features.chat.slack_api import router as slack_router
from halswarm.supervisor.features.commands.api import router as commands_router
from halswarm.supervisor.features.console.api import router as console_router
from halswarm.supervisor.features.console.service import ConsoleService
from halswarm.supervisor.features.cost.api import router as cost_router
from halswarm.supervisor.features.dependencies.api import router as dependencies_router
from halswarm.supervisor.features.env.api import router as env_router
from halswarm.supervisor.features.events.api import router as events_router
from halswarm.supervisor.features.health.api import router as health_router
from halswarm.supervisor.features.nodes.api import router as nodes_router
from halswarm.supervisor.features.policies.api import router as policies_router
from halswarm.supervisor.features.remediations.api import router as remediations_router
from halswarm.supervisor.features.sessions.api import router as sessions_router
from halswarm.supervisor.features.tool_auth.api import router as tool_auth_router
from halswarm.supervisor.http.docs_ui import install_docs
from halswarm.supervisor.http.errors import install_error_handling
from halswarm.supervisor.http.openapi_doc import install_openapi
from halswarm.supervisor.http.request_metrics import RequestMetrics

# Order matters where paths overlap (a literal before a parameter: /cost/status before /cost/{period}).
ROUTERS = (health_router, nodes_router, sessions_router, events_router, commands_router, audit_router)
LATE_ROUTERS = (cost_router, policies_router, dependencies_router, tool_auth_router)


def build_app(services: Services, *, max_body: int, on_internal: Callable[[], None] | None = None,
              request_duration: Histogram | None = None) -> FastAPI:
    """The app serving `services` (filled by the composition root, `supervisor/app.py`)."""
    app = FastAPI(title="hal-supervisor", version=__version__, openapi_url="/openapi.json", docs_url=None,
                  redoc_url=None)
    app.state.services = services
    install_error_handling(app, max_body, on_internal=on_internal)
    for router in ROUTERS:
        app.include_router(router)
    for router in LATE_ROUTERS:
        app.include_router(router)
    app.include_router(env_router)
    app.include_router(remediations_router)
    app.include_router(alerts_router)
    app.include_router(approvals_router)
    app.include_router(chat_router)
    app.include_router(slack_router)
    if services.has(ConsoleService):  # `console.enabled` (default true): HTML pages under /ui, not in OpenAPI
        app.include_router(console_router)
    install_openapi(app, list(STATUS_BY_CODE))
    install_docs(app)
    if request_duration is not None:  # outermost: it times the guard and the error handling too
        app.add_middleware(RequestMetrics, histogram=request_duration)
    return app
