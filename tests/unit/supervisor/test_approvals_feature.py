"""Approvals, pure parts of the feature: settings, the API shape against its schema, notifications."""

from __future__ import annotations

import dataclasses
from typing import Any

import jsonschema
import pytest

from halswarm.config.errors import ConfigError
from halswarm.config.supervisor import parse_supervisor_config
from halswarm.supervisor.features.approvals.service import to_api
from halswarm.supervisor.features.approvals.settings import ApprovalSettings
from halswarm.supervisor.http.openapi_models import SCHEMAS
from halswarm.supervisor.notify.formats import Notification, description, severity, webhook_payload

ROW: dict[str, Any] = {
    "id": "per_1", "node_id": "n1", "session_id": "ses_a", "project": "alpha", "permission": "bash",
    "patterns": ["echo hi"], "always": ["echo *"], "command": "echo hi", "tool": {"callID": "call_1"},
    "asked_at": 100.0, "status": "pending", "reply": None, "message": None, "replied_by": None, "replied_at": None,
    "escalated_at": None}


def test_to_api_matches_the_documented_schema_and_names_the_commands() -> None:
    out = to_api(ROW, 130.5)
    jsonschema.validate(out, {"$ref": "#/components/schemas/Approval", "components": {"schemas": SCHEMAS}})
    assert out["age_sec"] == 30.5 and out["asked_at"] == "1970-01-01T00:01:40.000Z"
    assert out["approve_command"] == "halctl approvals approve per_1"
    assert out["deny_command"] == "halctl approvals deny per_1"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({k: v for k, v in out.items() if k != "session_id"},
                            {"$ref": "#/components/schemas/Approval", "components": {"schemas": SCHEMAS}})


def test_settings_default_off_and_bad_values_are_one_line() -> None:
    cfg, _ = parse_supervisor_config({"auth_token": "a" * 40})
    s = ApprovalSettings.from_config(cfg)
    assert (s.enabled, s.timeout_minutes, s.on_timeout) == (False, 0.0, "reject")
    on = ApprovalSettings(2, "escalate")
    assert on.enabled and on.timeout_sec == 120 and on.check_interval_sec == 30
    assert ApprovalSettings(0.01).check_interval_sec == pytest.approx(0.2)
    for bad, key in (({"timeout_minutes": -1}, "approvals.timeout_minutes"),
                     ({"timeout_minutes": "5"}, "approvals.timeout_minutes"),
                     ({"timeout_minutes": True}, "approvals.timeout_minutes"),
                     ({"on_timeout": "approve"}, "approvals.on_timeout")):
        with pytest.raises(ConfigError) as err:
            ApprovalSettings.from_config(dataclasses.replace(cfg, raw={**cfg.raw, "approvals": bad}))
        assert str(err.value).startswith(key), str(err.value)


def test_the_schema_refuses_an_unknown_policy_value() -> None:
    with pytest.raises(ConfigError, match=r"approvals\.on_timeout: must be one of reject, escalate"):
        parse_supervisor_config({"auth_token": "a" * 40, "approvals": {"on_timeout": "approve"}})


def test_a_permission_notification_names_the_approval_command() -> None:
    ev = {"type": "permission.asked", "node_id": "n1", "session_id": "ses_a", "project": "alpha",
          "data": {"id": "per_9", "sessionID": "ses_a", "permission": "bash", "patterns": ["rm -rf build"],
                   "metadata": {"command": "rm -rf build"}}}
    n = Notification(ev, "permission.*")
    text = description(n)
    assert "halctl approvals approve per_9" in text and "halctl approvals deny per_9" in text
    assert "rm -rf build" in text and severity(n) == "warning"
    body = webhook_payload(n, "https://hooks.invalid/x")
    assert body["approve_command"] == "halctl approvals approve per_9" and body["text"] == text
