"""OpenAPI-driven fuzzing of the real supervisor's HTTP API (issue 15 point 6), with schemathesis.

Every operation of ``/openapi.json`` gets valid (positive) and invalid (negative) requests generated
from its schema, sent with the operator token to a real supervisor process, and each answer is checked:
no 5xx (``not_a_server_error``), a status the document lists (``status_code_conformance``), its media
type (``content_type_conformance``) and its schema (``response_schema_conformance``: the
``{"error", "code"}`` envelope for errors, for successes the typed schema every JSON route declares
(``openapi_models``), so a 2xx body whose shape differs from the document fails here too; without an agent
the dispatching routes only answer errors: tests/integration/test_openapi_doc.py calls every route to a 2xx).

Deterministic and bounded: ``derandomize=True`` (examples derived from the test, no random seed, no
example database), ``POSITIVE``/``NEGATIVE`` examples per operation, no shrinking (each answer is
checked and counted, the test fails at the end with the list). Nothing long-running can start: the
supervisor has no agent connected, no remediation inventory and no cost provider, so session and env
commands fail at once with NOT_FOUND/SERVICE_UNAVAILABLE-style errors and no playbook runs.
Excluded: ``GET /api/v1/events/stream`` (an endless SSE stream, no answer to check).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import Failure, FailureGroup

POSITIVE = 12
NEGATIVE = 8
EXCLUDED = {("GET", "/api/v1/events/stream")}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@dataclass
class Tally:
    requests: int = 0
    server_errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    succeeded: set[tuple[str, str]] = field(default_factory=set)  # operations with a 2xx body checked


@pytest.mark.timeout(400)
def test_openapi_fuzz_finds_no_server_error_and_no_schema_violation(supervisor):
    schema = schemathesis.openapi.from_url(supervisor.api + "/openapi.json")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {supervisor.token}"
    tally = Tally()
    operations = []
    for result in schema.get_all_operations():
        op = result.ok()
        if (op.method.upper(), op.path) not in EXCLUDED:
            operations.append(op)
    started = time.monotonic()
    no_negative = 0

    for op in operations:
        for mode, examples in ((GenerationMode.POSITIVE, POSITIVE), (GenerationMode.NEGATIVE, NEGATIVE)):
            @settings(derandomize=True, max_examples=examples, deadline=None, database=None,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                response = case.call(session=session, base_url=supervisor.api, timeout=30)
                tally.requests += 1
                tally.statuses[response.status_code] += 1
                if response.status_code < 300:
                    tally.succeeded.add((case.method.upper(), case.operation.path))
                what = f"{case.method} {case.formatted_path} {response.status_code}"
                if response.status_code >= 500:
                    tally.server_errors.append(f"{what}: {response.text[:200]}")
                try:
                    case.validate_response(response, checks=CHECKS)
                except (Failure, FailureGroup) as exc:
                    failures = exc.exceptions if isinstance(exc, FailureGroup) else [exc]
                    tally.violations.extend(f"{what}: {f.title}" for f in failures
                                            if not isinstance(f, Failure) or "Server error" not in f.title)

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE, op.label
                no_negative += 1

    elapsed = time.monotonic() - started
    print(f"\nAPI fuzz: {len(operations)} operations ({no_negative} with nothing to make invalid), "
          f"{tally.requests} requests, "
          f"{len(tally.server_errors)} 5xx, {len(tally.violations)} schema violations, {elapsed:.1f} s; "
          f"{len(tally.succeeded)} operations answered 2xx bodies checked against their typed schema; "
          f"statuses {dict(sorted(tally.statuses.items()))}")
    assert tally.requests >= len(operations) * 2
    assert not tally.server_errors, "\n".join(tally.server_errors[:20])
    assert not tally.violations, "\n".join(sorted(set(tally.violations))[:30])
    assert "/api/v1/sessions" in {op.path for op in operations}
