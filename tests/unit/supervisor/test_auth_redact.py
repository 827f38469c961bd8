from __future__ import annotations

from halswarm.supervisor.redact import REDACTED, redact
from halswarm.supervisor.security import FailureThrottle, bearer, origin_allowed, token_matches


def test_token_and_bearer_parsing():
    assert token_matches("a" * 40, "a" * 40)
    assert not token_matches("a" * 40, "b" * 40)
    assert not token_matches(None, "x") and not token_matches("", "")
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None and bearer("Bearer ") is None and bearer(None) is None


def test_throttle_window():
    t = FailureThrottle(limit=3, window=10)
    for i in range(3):
        assert not t.blocked("1.2.3.4", now=float(i))
        t.failed("1.2.3.4", now=float(i))
    assert t.blocked("1.2.3.4", now=3.0)
    assert not t.blocked("5.6.7.8", now=3.0)
    assert not t.blocked("1.2.3.4", now=20.0)


def test_origin_allowlist_never_locks_out_agents():
    pats = ["https://ops.example.com", "http://localhost:*", "https://*.corp.example"]
    assert origin_allowed(None, pats)  # agents send no Origin
    assert origin_allowed("https://ops.example.com", pats)
    assert origin_allowed("http://localhost:3000", pats)
    assert origin_allowed("https://a.corp.example", pats)
    assert not origin_allowed("https://evil.example", pats)
    assert not origin_allowed("http://ops.example.com", pats)
    assert origin_allowed("https://anything", [])


def test_redaction_is_recursive_and_keeps_shape():
    doc = {"env_vars": {"DATABASE_URL": "postgres://u:p@h/db", "X": "1"}, "api_key": "sk-1", "auth_token": "t",
           "idempotency_key": "k", "nested": [{"password": "pw", "name": "ok"}], "message": "hello",
           "empty_token": ""}
    out = redact(doc)
    assert out["env_vars"] == {"DATABASE_URL": REDACTED, "X": REDACTED}
    assert out["api_key"] == REDACTED and out["auth_token"] == REDACTED
    assert out["idempotency_key"] == "k" and out["message"] == "hello"
    assert out["nested"] == [{"password": REDACTED, "name": "ok"}]
    assert out["empty_token"] == ""
