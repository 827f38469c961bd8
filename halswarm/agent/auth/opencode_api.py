"""The opencode server routes for provider credentials (peers.md 2, "Provider auth via the server").

``GET /provider`` -> ``{"all", "connected", "default"}``; ``PUT /auth/{provider}``
``{"type":"api","key":...}`` -> ``true`` (written to opencode's auth.json, 0600, picked up at once).
Uses the client's public methods when it has them, else its request helper.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from halswarm.core.auth_status.opencode import connected_from_provider_body

# env var -> opencode provider id (the keys opencode itself reads from the environment)
PROVIDER_ENV: dict[str, str] = {
    "ANTHROPIC_API_KEY": "anthropic",
    "OPENAI_API_KEY": "openai",
    "GEMINI_API_KEY": "google",
    "GOOGLE_GENERATIVE_AI_API_KEY": "google",
    "OPENROUTER_API_KEY": "openrouter",
    "GROQ_API_KEY": "groq",
    "MISTRAL_API_KEY": "mistral",
    "XAI_API_KEY": "xai",
    "DEEPSEEK_API_KEY": "deepseek",
}


class OpencodeAuthError(Exception):
    """A provider call failed; the message never holds a credential."""


async def _request(client: Any, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    request = getattr(client, "_request", None)
    if request is None:
        raise OpencodeAuthError("opencode client has no request method")
    return await request(method, path, json_body=body, **kw)


async def get_providers(client: Any) -> Any:
    method = getattr(client, "providers", None)
    if callable(method):
        return await method()
    # Only `connected` is read, without decoding the ~6 MB model catalogue into objects. (GET
    # /config/providers is smaller but cached per instance: it misses a login until a restart.)
    return await _request(client, "GET", "/provider", decode=connected_from_provider_body)


async def set_api_key(client: Any, provider: str, key: str) -> None:
    path = f"/auth/{quote(provider, safe='')}"
    try:
        method = getattr(client, "set_auth", None)
        if callable(method):
            await method(provider, {"type": "api", "key": key})
        else:
            await _request(client, "PUT", path, {"type": "api", "key": key})
    except Exception as exc:  # the exception text could quote the request: keep only its kind
        status = getattr(exc, "status", None)
        raise OpencodeAuthError(f"PUT {path} failed ({type(exc).__name__}{f', HTTP {status}' if status else ''})") \
            from None
