"""``/docs``: Swagger UI served from the files of the ``swagger-ui-py`` package (Swagger UI 5, which
reads OpenAPI 3.1), so the page works on a host without internet access and loads nothing from a CDN
(FastAPI's default does)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    app = request.app
    return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
                               swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                               swagger_css_url=f"{ASSETS}/swagger-ui.css",
                               swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
                               # no badge fetched from validator.swagger.io
                               swagger_ui_parameters={"validatorUrl": None})


def swagger_ui_static() -> Path:
    """The ``static`` folder of the ``swagger_ui`` package, found without importing it (its ``__init__``
    loads a handler for every web framework it supports)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed: /docs has no assets")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def install_docs(app: Any) -> None:
    """A ``/docs`` page whose script, style and icon come from ``/docs/assets`` (no auth: static files)."""
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_static())), name="docs-assets")
    app.include_router(router)
