"""Route match expressions, conditions, channel resolution and message formats (pure)."""

from __future__ import annotations

import pytest

from halswarm.supervisor.notify.channels import ChannelError, resolve
from halswarm.supervisor.notify.conditions import ConditionError, Facts, evaluate, parse_condition
from halswarm.supervisor.notify.formats import Notification, discord_payload, slack_payload, webhook_payload
from halswarm.supervisor.notify.matcher import MatchError, parse_match
from halswarm.supervisor.notify.router import ErrorWindow, is_error_event


def test_patterns_are_globs_on_the_event_type() -> None:
    m = parse_match("node.*")
    assert m.matches_type("node.offline") and m.matches_type("node.online")
    assert not m.matches_type("session.error") and not m.matches_type("xnode.offline")
    assert parse_match("*").matches_type("anything.at.all")
    alt = parse_match("session.error|node.offline")
    assert alt.matches_type("node.offline") and alt.matches_type("session.error")
    assert not alt.matches_type("node.online")
    assert parse_match("env.*").matches_type("env.drift") and parse_match("session.error").conditions == ()


def test_conditions_parse_with_units_and_windows() -> None:
    c = parse_condition("stuck > 5m")
    assert (c.metric, c.op, c.value, c.window) == ("stuck", ">", 300.0, None)
    assert parse_condition("stuck>=90").value == 90.0
    assert parse_condition("cost.daily > 20").value == 20.0
    e = parse_condition("errors >= 3 in 10m")
    assert (e.metric, e.op, e.value, e.window) == ("errors", ">=", 3.0, 600.0)
    assert parse_condition("errors > 1").window == 600.0
    for bad in ("cost.daily > 20m", "stuck > 5m in 10m", "mood > 3", "stuck >> 5", "errors >= many"):
        with pytest.raises(ConditionError):
            parse_condition(bad)


def test_match_combines_patterns_and_conditions() -> None:
    m = parse_match("session.idle && stuck > 5m")
    assert m.patterns == ("session.idle",) and m.stuck is not None and m.instant == ()
    m = parse_match("session.error and errors >= 3 in 10m")
    assert m.patterns == ("session.error",) and m.scope == "subject"
    only = parse_match("cost.daily > 20")
    assert only.patterns == () and only.regex is None and only.scope == "global"
    assert parse_match("stuck > 5m").scope == "session"
    for bad in ("", "session.error && ", "session error", "cost.weekly > 3"):
        with pytest.raises(MatchError):
            parse_match(bad)


def test_evaluate_conditions_on_facts() -> None:
    conds = parse_match("cost.daily > 20 && errors >= 3 in 10m").conditions
    counts = {600.0: 3}
    ok, values = evaluate(conds, Facts(daily_cost=25.0, errors_in=lambda w: counts.get(w, 0)))
    assert ok and values == {"cost.daily > 20": 25.0, "errors >= 3 in 10m": 3.0}
    ok, _ = evaluate(conds, Facts(daily_cost=19.99, errors_in=lambda w: 5))
    assert not ok
    ok, values = evaluate(parse_match("cost.session >= 5").conditions, Facts(session_cost=None))
    assert not ok and values == {"cost.session >= 5": None}


def test_error_window_counts_per_subject() -> None:
    w = ErrorWindow(600)
    for t in (0, 100, 200, 650):
        w.add({"session_id": "s1", "project": "alpha", "node_id": "n1"}, t)
    assert w.count(("session", "s1"), 600, 700) == 3  # 100, 200, 650
    assert w.count(("project", "alpha"), 60, 700) == 1
    assert w.count(("node", "n2"), 600, 700) == 0
    assert is_error_event("session.error") and is_error_event("opencode.start_failed")
    assert not is_error_event("session.state")


CHANNELS = {
    "discord": {"bot_token": "discord-bot-token", "webhook_url": "https://discord.test/api/webhooks/1/default",
                "channels": {"alerts": "https://discord.test/api/webhooks/2/alerts", "dev-log": "123456"},
                "api_base": "http://127.0.0.1:9/api"},
    "slack": {"channels": {"alerts": "https://hooks.slack.test/services/T/B/x", "dev-log": "C0123"},
              "bot_token": "xoxb-slack", "api_base": "http://127.0.0.1:9/slack"},
    "n8n": {"webhook_url": "https://n8n.test/webhook/hal"},
}


def test_targets_resolve_from_channels() -> None:
    assert resolve("discord#alerts", CHANNELS).kind == "discord_webhook"
    bot = resolve("discord#dev-log", CHANNELS)
    assert bot.kind == "discord_bot" and bot.url == "http://127.0.0.1:9/api/channels/123456/messages"
    assert bot.headers == {"Authorization": "Bot discord-bot-token"}
    fallback = resolve("discord#build-log", CHANNELS)
    assert fallback.kind == "discord_webhook" and fallback.url.endswith("/default")
    assert resolve("slack#alerts", CHANNELS).kind == "slack_webhook"
    sb = resolve("slack#dev-log", CHANNELS)
    assert sb.kind == "slack_bot" and sb.url.endswith("/chat.postMessage") and sb.channel_id == "C0123"
    assert resolve("n8n", CHANNELS).url == "https://n8n.test/webhook/hal"
    hook = resolve("webhook:https://user:pw@hooks.test:8443/secret/path", {})
    assert hook.kind == "json" and hook.label == "webhook:https://hooks.test:8443"
    assert "secret" not in repr(hook) and "discord-bot-token" not in repr(bot)
    for target, cfg in (("slack#x", {}), ("n8n", {}), ("webhook:ftp://x", {}), ("teams#x", {})):
        with pytest.raises(ChannelError):
            resolve(target, cfg)


EVENT = {"id": 7, "node_id": "node-1", "seq": 3, "event_id": "e3", "session_id": "ses_1", "project": "alpha",
         "type": "session.error", "timestamp": "2025-08-10T12:00:00.000Z",
         "data": {"error": {"name": "ProviderAuthError", "data": {"message": "invalid x-api-key"}},
                  "api_key": "sk-secret-value"}}


def test_discord_embed_format() -> None:
    body = discord_payload(Notification(EVENT, "session.error"))
    assert body["username"] == "HAL-O-SWARM" and body["allowed_mentions"] == {"parse": []}
    (embed,) = body["embeds"]
    assert embed["title"] == "session.error · alpha"
    assert embed["description"] == "ProviderAuthError: invalid x-api-key"
    assert embed["color"] == 0xCC3333
    assert {"name": "Session", "value": "ses_1", "inline": True} in embed["fields"]
    assert embed["timestamp"] == EVENT["timestamp"] and "session.error" in embed["footer"]["text"]
    assert "sk-secret-value" not in str(body)
    ok = discord_payload(Notification({**EVENT, "type": "node.online", "data": {}}, "node.*"), webhook=False)
    assert ok["embeds"][0]["color"] == 0x00CC66 and "username" not in ok


def test_slack_block_kit_format() -> None:
    n = Notification({**EVENT, "type": "policy.action", "data": {"policy": "resume_on_idle", "action": "resume",
                                                                   "result": "failure", "error": "<@U123> boom"}},
                     "policy.*", {"errors >= 3 in 10m": 3.0})
    body = slack_payload(n, "C0123")
    assert body["channel"] == "C0123" and body["text"].startswith("policy.action · alpha")
    kinds = [b["type"] for b in body["blocks"]]
    assert kinds == ["header", "section", "section", "context"]
    assert body["blocks"][0]["text"] == {"type": "plain_text", "text": "policy.action · alpha", "emoji": True}
    text = body["blocks"][1]["text"]["text"]
    assert "resume_on_idle: resume → failure" in text and "&lt;@U123&gt;" in text and ":red_circle:" in text
    assert {"type": "mrkdwn", "text": "*errors &gt;= 3 in 10m*\n3"} in body["blocks"][2]["fields"]


def test_webhook_json_format_carries_the_event() -> None:
    body = webhook_payload(Notification(EVENT, "session.error", {}), "n8n")
    assert body["source"] == "hal-o-swarm" and body["target"] == "n8n" and body["severity"] == "error"
    assert body["event"]["id"] == 7 and body["event"]["type"] == "session.error"
    assert body["event"]["data"]["api_key"] == "[REDACTED]"
