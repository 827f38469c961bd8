"""Agent failover, the pure parts (issue 21): supervisor URL lists and the rotation's order and backoff.

No sockets: the rotation is driven with scripted outcomes; the backoff with seeded RNGs.
"""

from __future__ import annotations

import random

import pytest

from halswarm.protocol.agent_link import AgentLinkCore, ConnState, plan_resume
from halswarm.protocol.backoff import Backoff
from halswarm.protocol.failover import Rotation, Target
from halswarm.protocol.supervisor_urls import (
    MAX_SUPERVISOR_URLS,
    SupervisorUrlError,
    parse_supervisor_url,
    parse_supervisor_urls,
)

A = "ws://10.0.0.1:8420/ws/agent"
B = "ws://10.0.0.2:8420/ws/agent"
C = "wss://sup-c.example:9443/ws/agent"

# ---------------------------------------------------------------- URL parsing


def test_one_string_still_works_and_gives_one_url() -> None:
    (url,) = parse_supervisor_urls(A)
    assert (url.url, url.scheme, url.host, url.port, url.path) == (A, "ws", "10.0.0.1", 8420, "/ws/agent")
    assert url.host_is_ip


def test_a_list_keeps_its_order_and_default_ports() -> None:
    urls = parse_supervisor_urls([C, "ws://sup-d", "wss://[::1]/ws/agent"])
    assert [u.url for u in urls] == [C, "ws://sup-d", "wss://[::1]/ws/agent"]
    assert [u.port for u in urls] == [9443, 80, 443]
    assert [u.host for u in urls] == ["sup-c.example", "sup-d", "::1"]
    assert [u.host_is_ip for u in urls] == [False, False, True]


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("http://sup:8420/ws/agent", "must use ws:// or wss://"),
        ("sup:8420", "must use ws:// or wss://"),
        ("ws://:8420/ws/agent", "has no host"),
        ("ws:///ws/agent", "has no host"),
        ("ws://sup:0/ws/agent", "invalid port"),
        ("ws://sup:65536/ws/agent", "invalid port"),
        ("ws://sup:http/ws/agent", "invalid port"),
        ("ws://sup:/ws/agent", "empty port"),
        ("ws://user:pw@sup:8420/ws/agent", "must not carry credentials"),
        ("ws://sup:8420/ws/agent?token=x", "query or fragment"),
        ("ws://sup:8420/ws/agent#x", "query or fragment"),
        ("ws://sup :8420", "whitespace"),
        ("", "non-empty"),
        (None, "non-empty"),
        (8420, "non-empty"),
    ],
)
def test_bad_urls_are_refused_with_a_one_line_reason(raw: object, says: str) -> None:
    with pytest.raises(SupervisorUrlError, match=says) as info:
        parse_supervisor_url(raw)
    assert "\n" not in str(info.value)


def test_bad_lists_name_the_entry() -> None:
    with pytest.raises(SupervisorUrlError, match=r"^\[1\]: .*must use ws://"):
        parse_supervisor_urls([A, "http://x"])
    with pytest.raises(SupervisorUrlError, match=r"^\[1\]: .*listed twice"):
        parse_supervisor_urls([A, "WS://10.0.0.1:8420/ws/agent"])
    with pytest.raises(SupervisorUrlError, match="empty"):
        parse_supervisor_urls([])
    with pytest.raises(SupervisorUrlError, match="at most"):
        parse_supervisor_urls([f"ws://s{i}:1" for i in range(MAX_SUPERVISOR_URLS + 1)])
    with pytest.raises(SupervisorUrlError, match="URL or a list"):
        parse_supervisor_urls({"url": A})
    # the same host and port on another path is another endpoint, not a repeat
    assert len(parse_supervisor_urls(["ws://s:1/a", "ws://s:1/b"])) == 2


# ---------------------------------------------------------------- rotation order


def rot(*urls: str, resolve: bool = True) -> Rotation:
    return Rotation(parse_supervisor_urls(list(urls)), resolve=resolve)


def test_single_url_every_failure_is_a_full_round() -> None:
    r = rot(A)
    assert not r.needs_resolve  # an address literal
    assert r.current() == Target(r.urls[0], None)
    assert [r.failed() for _ in range(5)] == [True] * 5
    assert r.current().url.url == A


def test_list_hops_within_a_round_and_backs_off_after_it() -> None:
    r = rot(A, B, C, resolve=False)
    seen, rounds = [], []
    for _ in range(6):
        seen.append(r.current().url.url)
        rounds.append(r.failed())
    assert seen == [A, B, C, A, B, C]
    assert rounds == [False, False, True, False, False, True]


def test_after_a_registration_the_round_starts_at_that_supervisor() -> None:
    r = rot(A, B, C, resolve=False)
    assert r.failed() is False  # A refused
    assert r.current().url.url == B
    assert r.registered() is False  # first registration: not a failover
    assert r.failed() is False  # B lost: hop to C, no grown backoff
    assert r.current().url.url == C
    assert r.failed() is False  # C down: hop to A
    assert r.failed() is True  # A down too: back at B, the round is done
    assert r.current().url.url == B


def test_registered_reports_a_move_to_another_supervisor() -> None:
    r = rot(A, B, resolve=False)
    assert r.registered() is False
    r.failed()
    assert r.registered() is True  # A -> B
    r.failed()
    assert r.registered() is True  # B -> A
    r.failed()
    r.failed()  # B refused, back at A
    assert r.registered() is False  # A again after A: not a move


def test_a_name_is_resolved_on_arrival_and_each_address_is_a_target() -> None:
    r = rot(C, B)
    assert r.needs_resolve
    with pytest.raises(RuntimeError):
        r.current()
    r.resolved(["192.0.2.1", "2001:db8::1", "192.0.2.1"])  # duplicates dropped
    assert r.addresses == ("192.0.2.1", "2001:db8::1")
    assert r.current().address == "192.0.2.1" and r.current().label == f"{C} [192.0.2.1]"
    assert r.failed() is False
    assert r.current().address == "2001:db8::1"
    assert r.failed() is False  # next URL
    assert r.current() == Target(r.urls[1], None) and not r.needs_resolve
    assert r.failed() is True  # back at C: the round is done, and C is looked up again
    assert r.needs_resolve
    r.resolved(["192.0.2.9"])
    assert r.current().address == "192.0.2.9"


def test_unresolvable_name_skips_to_the_next_url() -> None:
    r = rot(C, B)
    assert r.unresolvable() is False
    assert r.current().url.url == B
    with pytest.raises(ValueError):
        Rotation(())
    r2 = rot(C)
    with pytest.raises(ValueError):
        r2.resolved([])


def test_behind_a_proxy_names_are_not_resolved() -> None:
    r = rot(C, resolve=False)
    assert not r.needs_resolve and r.current().address is None


def test_same_store_follows_the_supervisor_that_acked() -> None:
    r = rot(A, B, resolve=False)
    assert r.same_store()  # nothing acked yet: as before failover existed
    r.registered()
    r.resumed()
    assert r.same_store()
    r.failed()  # A lost -> B
    assert not r.same_store()
    r.registered()
    r.resumed()
    assert r.same_store()
    r.failed()  # B lost -> back to A: A did not ack what B acked
    assert not r.same_store()


# ---------------------------------------------------------------- backoff with the rotation


def test_hops_wait_the_floor_and_do_not_grow_the_backoff() -> None:
    core = AgentLinkCore(backoff=Backoff(0.1, 60.0, rng=random.Random(1)))
    r = rot(A, B, C, resolve=False)
    delays = []
    for _ in range(9):  # three rounds with every supervisor down
        delays.append(core.retry_delay(round_done=r.failed()))
    assert delays[0] == delays[1] == delays[3] == delays[4] == 0.1  # hops
    assert core.backoff.attempt == 3  # grew once per round, not once per supervisor
    assert all(d <= 60.0 for d in delays)


def test_losing_a_ready_supervisor_costs_one_hop() -> None:
    core = AgentLinkCore(backoff=Backoff(0.1, 60.0, rng=random.Random(2)))
    r = rot(A, B, resolve=False)
    for _ in range(10):  # A and B were both down for a while: the backoff grew
        core.retry_delay(round_done=r.failed())
    assert core.backoff.ceiling() > 1  # five rounds: 0.1 * 2**5
    core.transition(ConnState.CONNECTING)
    core.transition(ConnState.REGISTERING)
    core.register_sent()
    core.registered(0, 0, 30)  # registered (on A): the backoff restarts
    r.registered()
    core.transition(ConnState.READY)
    core.transition(ConnState.DISCONNECTED)  # A killed
    assert core.retry_delay(round_done=r.failed()) == 0.1  # straight to B
    assert r.current().url.url == B
    assert core.backoff.attempt == 0


def test_refused_rounds_use_the_slow_backoff_but_hops_do_not() -> None:
    core = AgentLinkCore(auth_backoff=Backoff(1.0, 300.0, floor=1.0, rng=random.Random(3)))
    r = rot(A, B, resolve=False)
    assert core.retry_delay(refused=True, round_done=r.failed()) == core.backoff.floor
    assert 1.0 <= core.retry_delay(refused=True, round_done=r.failed()) <= 300.0
    assert core.auth_backoff.attempt == 1


# ---------------------------------------------------------------- resume across stores


def test_resume_from_another_store_never_deletes_pending_events() -> None:
    # acked up to 20 on B; 21..35 pending; A (independent store) holds 30 of its own numbering
    assert plan_resume(30, 20, 36) is None  # same store: 21..30 are stored there, delete them
    assert plan_resume(30, 20, 36, same_store=False) == 10  # another store: renumber 21..35 -> 31..45
    assert plan_resume(5, 20, 36, same_store=False) == -15  # it knows fewer: renumber down, as before
    assert plan_resume(50, 20, 36, same_store=False) == 30
    assert plan_resume(20, 20, 36, same_store=False) is None  # nothing to move
