"""By-value redaction: the registry, config secret discovery and the log filter."""

from __future__ import annotations

import io
import json
import logging

from halswarm.core.secret_values import REDACTED, SecretValues, config_secret_values
from halswarm.logsetup import JsonFormatter, RedactFilter

TOKEN = "t" * 20 + "0123456789abcdef"
KEY = "sk-ant-admin01-ABCDEF0123456789"


def test_scrub_replaces_values_bearer_and_query_tokens() -> None:
    reg = SecretValues()
    reg.add(TOKEN, KEY, "short", None, "")
    assert len(reg) == 2  # short and empty values are not registered (they would redact words)
    text = f"Incorrect API key provided: {KEY}. header Authorization: Bearer {TOKEN} url /ws?token={TOKEN}&x=1"
    out = reg.scrub(text)
    assert KEY not in out and TOKEN not in out and "short" not in text
    assert f"key provided: {REDACTED}." in out and "&x=1" in out
    unknown = SecretValues().scrub("Authorization: Bearer abc.def-ghi and /ws/agent?token=zzz")
    assert unknown == f"Authorization: Bearer {REDACTED} and /ws/agent?token={REDACTED}"
    assert reg.scrub_data({"error": f"bad {KEY}", "list": [TOKEN, 3], KEY: None}) == {
        "error": f"bad {REDACTED}", "list": [REDACTED, 3], REDACTED: None}


def test_config_secret_values_finds_tokens_keys_webhooks_and_credential_maps() -> None:
    doc = {
        "server": {"auth_token": TOKEN, "auth_token_file": "/etc/hal/token", "port": 8420, "host": "127.0.0.1"},
        "security": {"agent_tokens": {"n1": "n" * 40}, "operator_token": "o" * 40},
        "cost": {"providers": {"anthropic": {"admin_api_key": KEY, "base_url": "https://api.example.test"}}},
        "channels": {"slack": {"webhook_url": "https://hooks.example.test/services/T000/B000/XXXXXXXX"}},
        "credentials": {"defaults": {"env": {"OPENAI_API_KEY": "sk-openai-0123456789"}}, "version": 3},
        "policies": {"restart_on_compaction": {"token_threshold": 180000}},
        "operators": {"operator_tokens": {"alice": {"token": "al" * 20, "role": "operator"}, "bob": "bo" * 20}},
    }
    assert config_secret_values(doc) == {TOKEN, "n" * 40, "o" * 40, KEY, "sk-openai-0123456789",
                                         "https://hooks.example.test/services/T000/B000/XXXXXXXX",
                                         "al" * 20, "bo" * 20}


def test_log_filter_redacts_every_logger_args_and_tracebacks() -> None:
    reg = SecretValues()
    reg.add(TOKEN)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactFilter(reg))
    lg = logging.getLogger("websockets.server.test-redact")
    lg.addHandler(handler)
    lg.setLevel(logging.DEBUG)
    lg.propagate = False
    try:
        lg.debug("< Authorization: Bearer %s", TOKEN)
        try:
            raise ValueError(f"bad token {TOKEN}")
        except ValueError:
            lg.exception("failed with %r", {"token": TOKEN})
    finally:
        lg.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert TOKEN not in stream.getvalue()
    assert lines[0]["msg"] == f"< Authorization: Bearer {REDACTED}"
    assert "ValueError: bad token [REDACTED]" in lines[1]["exc"]


def test_scrub_values_replaces_only_known_values_and_keeps_json_valid() -> None:
    reg = SecretValues()
    text = json.dumps({"stdout": "Bearer abc key=sk-live-0123456789", "n": 1})
    assert reg.scrub_values(text) is text  # nothing registered: the text itself, untouched
    reg.add("sk-live-0123456789")
    out = reg.scrub_values(text)
    assert json.loads(out) == {"stdout": f"Bearer abc key={REDACTED}", "n": 1}  # no bearer/query rules here
    clean = json.dumps({"stdout": "nothing secret"})
    assert reg.scrub_values(clean) is clean


def test_scrub_texts_checks_a_batch_once_and_redacts_only_the_texts_holding_a_value() -> None:
    reg = SecretValues()
    texts = [json.dumps({"delta": f"part {i}"}) for i in range(50)]
    assert reg.scrub_texts(texts) is texts  # nothing registered
    reg.add("sk-live-0123456789")
    assert reg.scrub_texts(texts) is texts  # registered, in no text: the same list, no per-text work
    leaky = [*texts[:10], json.dumps({"stdout": "key=sk-live-0123456789"}), *texts[10:]]
    out = reg.scrub_texts(leaky)
    assert json.loads(out[10]) == {"stdout": f"key={REDACTED}"}
    assert all(a is b for i, (a, b) in enumerate(zip(leaky, out, strict=True)) if i != 10)
    assert "sk-live-0123456789" not in "".join(out)


def test_scrub_texts_value_split_across_two_texts_is_not_a_leak_in_either() -> None:
    reg = SecretValues()
    reg.add("abcdefgh\nijklmnop")  # a value the batch separator could fake across two texts
    texts = ["xx abcdefgh", "ijklmnop yy"]
    assert reg.scrub_texts(texts) == texts  # found in the joined text only: each text is checked, none changes
