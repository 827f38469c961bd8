"""``/docs``: Swagger UI served from the files of the ``swagger-ui-bundle`` package, so the page works
on a host without internet access and loads nothing from a CDN (FastAPI's default does)."""

from __future__ import annotations

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


def install_docs(app: Any) -> None:
    """A ``/docs`` page whose script, style and icon come from ``/docs/assets`` (no auth: static files)."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    app.include_router(router)
