"""`alerts.*`: the alert token (a secret of its own, least privilege) and max_alerts."""

from __future__ import annotations

from pathlib import Path

import pytest

from halswarm.config import ConfigError, parse_supervisor_config
from halswarm.supervisor.features.alerts.settings import AlertSettings
from tests.support.config_fixtures import OP_TOKEN, TOKEN

ALERT = "al" * 4 + "0123456789abcdef" * 3


def _parse(alerts: dict[str, object], **extra: object):  # type: ignore[no-untyped-def]
    return parse_supervisor_config({"auth_token": TOKEN, "security": {"operator_token": OP_TOKEN},
                                    "alerts": alerts, **extra}, env={})


def test_token_inline_or_from_file_and_max_alerts(tmp_path: Path) -> None:
    cfg, _ = _parse({"token": ALERT, "max_alerts": 10})
    assert cfg.alert_token == ALERT and ALERT not in repr(cfg)
    assert AlertSettings.from_config(cfg).max_alerts == 10
    f = tmp_path / "alert.token"
    f.write_text(ALERT + "\n")
    f.chmod(0o600)
    cfg, _ = _parse({"token_file": str(f)})
    assert cfg.alert_token == ALERT and AlertSettings.from_config(cfg).max_alerts == 200
    cfg, _ = _parse({})
    assert cfg.alert_token is None


@pytest.mark.parametrize(("alerts", "message"), [
    ({"token": "short"}, "alerts.token: token is too short"),
    ({"token": TOKEN}, "alerts.token: equals an agent or operator token"),
    ({"token": OP_TOKEN}, "alerts.token: equals an agent or operator token"),
    ({"token_file": "/nonexistent/alert.token"}, "alerts.token_file: cannot read"),
    ({"max_alerts": 0}, "alerts.max_alerts"),
    ({"max_alerts": 5000}, "alerts.max_alerts"),
])
def test_bad_alert_settings_are_one_clear_error(alerts: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(alerts)
    assert message in str(info.value), str(info.value)


def test_unknown_alerts_key_is_named() -> None:
    _, warnings = _parse({"colour": "red"})
    assert any("alerts.colour" in str(w) for w in warnings), warnings


def test_alert_token_from_a_file_is_redacted_by_value(tmp_path: Path) -> None:
    from halswarm.core.secret_values import SecretValues
    from halswarm.supervisor.secrets_registry import register_config_secrets

    f = tmp_path / "alert.token"
    f.write_text(ALERT)
    f.chmod(0o600)
    cfg, _ = _parse({"token_file": str(f)})
    registry = SecretValues()
    register_config_secrets(cfg, registry)
    assert registry.found_in(f"posted with {ALERT}") and ALERT not in registry.scrub(f"x {ALERT} y")
