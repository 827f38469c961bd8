"""HTML plumbing of the console: the template environment (autoescaped), security headers, the login
cookie, form bodies, same-origin checks and the small SVG bar chart."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from halswarm.core.timeutil import iso
from halswarm.supervisor.features.console.logins import COOKIE

PREFIX = "/ui"
# No inline script or style anywhere: the page's one script and one stylesheet come from /ui/static.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
}
MAX_FORM_FIELD = 100_000  # characters of one form value (a prompt)

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("halswarm.supervisor.features.console", "templates"),
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
)


def _when(ts: Any) -> str:
    if isinstance(ts, int | float):
        return (iso(float(ts)) or "").replace("T", " ")[:19]
    return str(ts or "").replace("T", " ")[:19]


def _usd(v: Any) -> str:
    try:
        return f"${float(v):,.2f}"
    except (TypeError, ValueError):
        return "-"


def _query(params: Mapping[str, Any], **changes: Any) -> str:
    """`?a=b...` of `params` with `changes` (None removes a key); the cursor keys never carry over."""
    merged = {k: v for k, v in params.items() if v not in (None, "") and k not in ("after", "before", "offset")}
    for k, v in changes.items():
        if v in (None, ""):
            merged.pop(k, None)
        else:
            merged[k] = v
    return "?" + urlencode(merged) if merged else "?"


_env.filters["when"] = _when
_env.filters["usd"] = _usd
_env.globals["query"] = _query


_ANONYMOUS = {"user": None, "role": None, "can_act": False, "csrf": "", "flash": None}


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page (or fragment) of the templates; a context without a login renders no user and no action."""
    context = _ANONYMOUS | context
    body = _env.get_template(name).render(**context)
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303, headers=SECURITY_HEADERS)


def set_login_cookie(resp: Response, sid: str, request: Request, max_age: int) -> None:
    resp.set_cookie(COOKIE, sid, max_age=max_age, path=PREFIX, httponly=True, samesite="strict",
                    secure=request.url.scheme == "https")


def clear_login_cookie(resp: Response, request: Request) -> None:
    resp.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict", secure=request.url.scheme == "https")


class BadForm(ValueError):
    pass


async def form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the console's forms), each key once."""
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    raw = await request.body()
    if not raw and not ctype:  # an empty post (a button's fetch): no fields, so no CSRF token either
        return {}
    if ctype != "application/x-www-form-urlencoded":
        raise BadForm("expected a form (application/x-www-form-urlencoded)")
    try:
        pairs = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=50)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadForm(f"unreadable form: {exc}") from None
    out: dict[str, str] = {}
    for k, v in pairs:
        if len(v) > MAX_FORM_FIELD:
            raise BadForm(f"form field {k[:40]!r} is longer than {MAX_FORM_FIELD} characters")
        out.setdefault(k, v)
    return out


def same_origin(request: Request) -> bool:
    """A state-changing request from another site is refused even before its CSRF token is looked at:
    `Origin` must name this very host; without a usable one, `Sec-Fetch-Site` must say same-origin."""
    origin = request.headers.get("origin")
    host = request.headers.get("host") or ""
    site = request.headers.get("sec-fetch-site")
    if origin is not None and origin != "null":
        return origin.split("://", 1)[-1].rstrip("/").lower() == host.lower()
    # `Origin: null` (a browser hiding it, e.g. under a no-referrer policy): the fetch metadata decides,
    # and a browser sends it; a client that sends neither is no browser, so no cross-site page drove it.
    if origin == "null":
        return site in ("same-origin", "none")
    return site in (None, "same-origin", "none")


def safe_back(value: str | None, default: str) -> str:
    """A return path given by a form: only a console path on this server (never `//host` or a scheme)."""
    if value and value.startswith(PREFIX + "/") and "//" not in value and "\\" not in value and "\n" not in value:
        return value
    return default


def bar_chart(rows: Sequence[tuple[str, float]], *, width: int = 640, bar: int = 22) -> str:
    """An inline SVG of horizontal bars (label, value); labels escaped, no script, no style attribute."""
    rows = list(rows)[:12]
    top = max((v for _, v in rows), default=0.0) or 1.0
    label_w, height = 180, max(1, len(rows)) * (bar + 6) + 6
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="cost-chart" role="img" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}"><title>cost by project</title>']
    for i, (label, value) in enumerate(rows):
        y = 6 + i * (bar + 6)
        w = max(1, int((width - label_w - 90) * (value / top)))
        parts.append(f'<text x="0" y="{y + bar - 6}" class="chart-label">{html.escape(label[:28])}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{w}" height="{bar}" class="chart-bar"/>'
                     f'<text x="{label_w + w + 6}" y="{y + bar - 6}" class="chart-value">{_usd(value)}</text>')
    if not rows:
        parts.append('<text x="0" y="20" class="chart-label">no cost recorded in this period</text>')
    parts.append("</svg>")
    return "".join(parts)
