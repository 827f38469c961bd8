"""What the leader's engines take for the fleet on a shared store (halswarm.supervisor.runtime.leases):
a node another supervisor holds counts as online; the sweep's findings update memory and emit once."""

from __future__ import annotations

from typing import Any

import pytest

from halswarm.core.model import Node
from halswarm.supervisor.runtime.leases import (
    FleetView,
    FleetVitals,
    LeaseSweep,
    RemoteLiveness,
    merge_fleet,
    supervisor_id,
)

pytestmark = pytest.mark.timeout(30)


def test_a_node_held_elsewhere_reads_online_without_changing_the_real_one() -> None:
    nodes = {"n1": Node(id="n1", status="offline"), "n2": Node(id="n2", status="offline"),
             "n3": Node(id="n3", status="online")}
    view = FleetView(nodes)
    assert {k: v.status for k, v in view.items()} == {"n1": "offline", "n2": "offline", "n3": "online"}
    assert view["n3"] is nodes["n3"]  # SQLite (nothing held elsewhere): the very same objects
    view.held_elsewhere = frozenset({"n1", "n3"})
    assert {k: v.status for k, v in view.items()} == {"n1": "online", "n2": "offline", "n3": "online"}
    assert nodes["n1"].status == "offline" and len(view) == 3 and list(view) == ["n1", "n2", "n3"]


class FakeConn:
    """Answers the sweep's two statements; remembers what the DELETE was told to keep."""

    def __init__(self, swept: list[str], live: dict[str, str],
                 remote: list[tuple[Any, ...]] | None = None) -> None:
        self.swept, self.live, self.remote = swept, live, remote or []
        self.kept: list[str] | None = None

    def execute(self, sql: str, params: Any = ()) -> Any:
        conn = self

        class Cur:
            def fetchall(self) -> list[tuple[Any, ...]]:
                if "JOIN nodes" in sql:
                    return list(conn.remote)
                return [(n,) for n in conn.swept]

            def __iter__(self) -> Any:
                return iter(conn.live.items())

        if sql.startswith("DELETE"):
            self.kept = params[1]
        return Cur()


class FakeWriter:
    def __init__(self, conn: FakeConn) -> None:
        self.conn = conn

    async def run(self, job: Any) -> Any:
        return job(self.conn)


async def test_the_sweep_marks_swept_nodes_offline_emits_and_refreshes_the_view() -> None:
    nodes = {"n1": Node(id="n1", status="online"), "n2": Node(id="n2", status="online")}
    view = FleetView(nodes)
    emitted: list[tuple[str, str, dict[str, Any]]] = []
    conn = FakeConn(["n1"], {"n4": "sup-b:2", "n5": "sup-a:1"},
                    [("n4", 1234.5, '{"memory_percent": 91.0}', '{"rss_bytes": 5e8, "bad": "x", "inf": 1e999}',
                      "host-4")])
    sweep = LeaseSweep(FakeWriter(conn), nodes, lambda n, t, d: emitted.append((n, t, d)), 10.0,
                       owner="sup-a:1", view=view, linked=lambda: ["n2"])
    assert await sweep.check() == ["n1"]
    assert conn.kept == ["n2"]  # connected here: never swept, whatever its lease says
    assert nodes["n1"].status == "offline" and nodes["n2"].status == "online"
    assert [e[:2] for e in emitted] == [("n1", "node.offline")]
    assert emitted[0][2]["reason"] == "lease expired"
    assert view.held_elsewhere == frozenset({"n4"})  # its own lease is not "elsewhere"
    # n4 was never loaded here: the view has it, online, with what its holder stored (numbers only).
    assert list(view) == ["n1", "n2", "n4"] and len(view) == 3
    n4 = view["n4"]
    assert (n4.status, n4.hostname, n4.last_heartbeat, n4.resources) == ("online", "host-4", 1234.5,
                                                                         {"memory_percent": 91.0})
    assert "n4" not in nodes
    vitals = FleetVitals({"n2": {"rss_bytes": 1.0}}, view)
    assert dict(vitals) == {"n2": {"rss_bytes": 1.0}, "n4": {"rss_bytes": 5e8}}
    assert vitals.get("n1") is None


def test_a_node_held_elsewhere_reads_its_holders_heartbeat() -> None:
    nodes = {"n1": Node(id="n1", status="offline", last_heartbeat=1.0, resources={"memory_percent": 10.0})}
    view = FleetView(nodes)
    view.held_elsewhere = frozenset({"n1"})
    view.remote = {"n1": RemoteLiveness(50.0, {"memory_percent": 95.0}, {"rss_bytes": 9.0})}
    n1 = view["n1"]
    assert (n1.status, n1.last_heartbeat, n1.resources) == ("online", 50.0, {"memory_percent": 95.0})
    assert nodes["n1"].last_heartbeat == 1.0  # the real object is untouched
    assert FleetVitals({}, view)["n1"] == {"rss_bytes": 9.0}
    view.held_elsewhere = frozenset()  # the lease went: the stored figures no longer count
    assert view["n1"].status == "offline" and FleetVitals({}, view).get("n1") is None


def test_supervisor_id_is_host_and_agent_port() -> None:
    a, b = supervisor_id(8420), supervisor_id(8421)
    assert a.endswith(":8420") and b.endswith(":8421") and a.rsplit(":", 1)[0] == b.rsplit(":", 1)[0]


def test_the_api_fleet_on_a_shared_store_merges_memory_rows_and_leases() -> None:
    """merge_fleet: a node connected here is memory; any other is its stored row, online exactly when a
    live lease of another supervisor holds it."""
    here = {"mine": Node(id="mine", status="online", last_seq=9), "a1": Node(id="a1", status="offline"),
            "fresh": Node(id="fresh", status="online")}
    stored = [Node(id="mine", status="online", last_seq=3), Node(id="a1", status="online", last_seq=40),
              Node(id="dead", status="online"), Node(id="gone", status="offline"),
              Node(id="released", status="online")]
    leases = {"mine": "sup-b:1", "a1": "sup-a:1", "released": "sup-b:1"}
    fleet = merge_fleet(here, ["mine", "fresh"], stored, leases, "sup-b:1")
    assert fleet["mine"] is here["mine"]  # connected here: memory, the newest word
    assert fleet["a1"].status == "online" and fleet["a1"].last_seq == 40  # A's node, as A stored it
    assert fleet["dead"].status == "offline"  # its holder died: no live lease, before the sweep rewrote it
    assert fleet["gone"].status == "offline"
    assert fleet["released"].status == "offline"  # this supervisor's lease but not connected here
    assert fleet["fresh"] is here["fresh"]  # only in memory (its row not committed yet)
    assert sorted(fleet) == ["a1", "dead", "fresh", "gone", "mine", "released"]
    assert here["a1"].status == "offline" and stored[1].status == "online"  # inputs unchanged
