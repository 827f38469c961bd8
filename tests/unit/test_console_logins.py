"""Console login sessions on a real migrated store: stored by digest only, found again after a restart
(a new LoginStore), ended by logout, idle time, age, and a rotated, removed or demoted credential; CSRF
tokens per session; the store bounded."""

from __future__ import annotations

import time

import pytest

from halswarm.config.errors import ConfigError
from halswarm.core.roles import Identity, Role
from halswarm.supervisor.apikit.deps import OperatorGate
from halswarm.supervisor.features.console import logins as logins_mod
from halswarm.supervisor.features.console.logins import LoginStore
from halswarm.supervisor.features.console.settings import ConsoleSettings
from tests.support.store_engines import StoreDb
from tests.support.store_rig import running_store

OPS = (Identity("alice", Role.operator, "a" * 40), Identity("vic", Role.viewer, "v" * 40))


def _rows(db: StoreDb) -> list[tuple]:
    conn = db.connect()
    try:
        return [tuple(r) for r in conn.execute("SELECT * FROM console_sessions").fetchall()]
    finally:
        conn.close()


async def test_open_lookup_restart_logout_and_digest_only(store_db: StoreDb):
    async with running_store(store_db) as (writer, reader, path):
        store = LoginStore(ConsoleSettings(), OperatorGate(OPS), reader, writer)
        assert store.authenticate("wrong", "1.2.3.4") is None
        ident = store.authenticate("a" * 40, "1.2.3.4")
        assert ident is not None and ident.name == "alice"
        sid, login = await store.open(ident)
        rows = _rows(path)
        assert len(rows) == 1 and sid not in repr(rows) and "a" * 40 not in repr(rows)
        again = await store.lookup(sid)
        assert again is not None and again.identity.role is Role.operator and again.csrf == login.csrf
        assert store.csrf_ok(again, login.csrf) and not store.csrf_ok(again, "0" * 64)
        assert not store.csrf_ok(again, None)
        # a restart: a new store with an empty cache finds the session in the database
        fresh = LoginStore(ConsoleSettings(), OperatorGate(OPS), reader, writer)
        assert (await fresh.lookup(sid)) is not None
        sid2, _ = await fresh.open(OPS[1])
        assert (await fresh.lookup(sid2)).csrf != login.csrf  # CSRF differs per session
        await fresh.close(again)
        assert await fresh.lookup(sid) is None and await store.lookup(sid + "x") is None
        assert await store.lookup(None) is None and await store.lookup("x" * 500) is None


async def test_rotated_removed_or_demoted_credentials_end_the_login(store_db: StoreDb):
    async with running_store(store_db) as (writer, reader, path):
        store = LoginStore(ConsoleSettings(), OperatorGate(OPS), reader, writer)
        sid, _ = await store.open(OPS[0])
        demoted = LoginStore(ConsoleSettings(), OperatorGate((Identity("alice", Role.viewer, "a" * 40),)), reader,
                             writer)
        assert (await demoted.lookup(sid)).identity.role is Role.viewer  # the role of now, not of the login
        rotated = LoginStore(ConsoleSettings(), OperatorGate((Identity("alice", Role.operator, "b" * 40),)), reader,
                             writer)
        assert await rotated.lookup(sid) is None
        assert _rows(path) == []  # and it was deleted


async def test_idle_and_age_limits_and_bound(store_db: StoreDb, monkeypatch):
    async with running_store(store_db) as (writer, reader, path):
        store = LoginStore(ConsoleSettings(idle_minutes=1, max_hours=1), OperatorGate(OPS), reader, writer)
        sid, _ = await store.open(OPS[0])
        now = time.time()
        monkeypatch.setattr(logins_mod.time, "time", lambda: now + 30)
        assert await store.lookup(sid) is not None
        monkeypatch.setattr(logins_mod.time, "time", lambda: now + 30 + 61)
        assert await store.lookup(sid) is None  # idle over a minute
        monkeypatch.setattr(logins_mod.time, "time", lambda: now)
        sid, _ = await store.open(OPS[0])
        for step in range(1, 62):  # used every minute, still ends after an hour
            monkeypatch.setattr(logins_mod.time, "time", lambda s=step: now + s * 59.5)
            found = await store.lookup(sid)
            if now + step * 59.5 >= now + 3600:
                assert found is None
                break
            assert found is not None
        small = LoginStore(ConsoleSettings(max_sessions=3), OperatorGate(OPS), reader, writer)
        for _ in range(5):
            await small.open(OPS[1])
        assert len(_rows(path)) == 3


@pytest.mark.parametrize("kw", [{"enabled": "yes"}, {"idle_minutes": 0}, {"max_hours": -1},
                                {"idle_minutes": float("nan")}, {"max_hours": True}])
def test_bad_settings_name_the_key(kw):
    with pytest.raises(ConfigError, match="console"):
        ConsoleSettings(**kw)
