"""Typed halctl errors and the exit code each one maps to.

This module is imported at start-up, so it must stay free of heavy imports (no httpx, rich, yaml).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4

AUTH_FAILED_MESSAGE = "authentication failed (check --auth-token / HALCTL_AUTH_TOKEN)"


class HalctlError(Exception):
    """Base class: an error that ends the command with one `error: ...` line on stderr."""

    exit_code: int = EXIT_FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ApiUnreachable(HalctlError):
    """The supervisor could not be reached (connection refused, DNS, TLS, timeout)."""

    exit_code = EXIT_UNREACHABLE


class ApiAuthError(HalctlError):
    """The supervisor refused our credentials (401/403)."""

    exit_code = EXIT_AUTH

    def __init__(self, message: str = AUTH_FAILED_MESSAGE, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class SupervisorRefused(HalctlError):
    """The supervisor answered with an error body `{"error": msg, "code": CODE}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})" if code else f"{message} (HTTP {status})")
        self.status = status
        self.code = code
        self.server_message = message


class ApiNotFound(SupervisorRefused):
    """404 from the supervisor."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)
        self.message = f"not found: {message}"


class CommandFailed(HalctlError):
    """A command reached the agent but did not succeed (status other than `success`)."""


class UsageProblem(HalctlError):
    """A bad value that only shows up after parsing (exit 2, like click's usage errors)."""

    exit_code = EXIT_USAGE
