"""The live collector: per-node series follow the live state; unknown figures have no sample."""

from __future__ import annotations

from pathlib import Path

from halswarm.core.model import Node
from halswarm.supervisor.runtime.live_metrics import LiveMetrics


def samples(live: LiveMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in live.collect() for s in f.samples}


def test_unknown_figures_have_no_sample(tmp_path: Path) -> None:
    live = LiveMetrics({}, list, {}, tmp_path / "missing" / "x.db", rss_fn=lambda: None, limit_fn=lambda: None)
    names = {name for name, _ in samples(live)}
    assert not names & {"hal_o_swarm_supervisor_resident_memory_bytes", "hal_o_swarm_supervisor_memory_max_bytes",
                        "hal_o_swarm_supervisor_systemd_restarts_total", "hal_o_swarm_database_size_bytes",
                        "hal_o_swarm_database_filesystem_avail_bytes"}


def test_own_figures_and_database(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    db.write_bytes(b"x" * 4096)
    Path(f"{db}-wal").write_bytes(b"y" * 1000)
    live = LiveMetrics({}, list, {}, db, rss_fn=lambda: 5_000_000, limit_fn=lambda: 1 << 30)
    live.restarts = 2
    got = samples(live)
    assert got[("hal_o_swarm_supervisor_resident_memory_bytes", ())] == 5_000_000
    assert got[("hal_o_swarm_supervisor_memory_max_bytes", ())] == 1 << 30
    assert got[("hal_o_swarm_supervisor_systemd_restarts_total", ())] == 2
    assert got[("hal_o_swarm_database_size_bytes", ())] == 5096
    assert 0 < got[("hal_o_swarm_database_filesystem_avail_bytes", ())] <= got[
        ("hal_o_swarm_database_filesystem_size_bytes", ())]


def test_a_node_that_leaves_reads_0_and_loses_its_figures(tmp_path: Path) -> None:
    node = Node(id="n1", status="online", last_heartbeat=1_700_000_000.0)
    nodes, links, vitals = {"n1": node}, {"n1"}, {"n1": {"rss_bytes": 7.0, "restarts": 1.0}}
    live = LiveMetrics(nodes, lambda: links, vitals, tmp_path / "x.db", rss_fn=lambda: None, limit_fn=lambda: None)
    n1 = (("node", "n1"),)
    got = samples(live)
    assert got[("hal_o_swarm_node_up", n1)] == 1 and got[("hal_o_swarm_node_connected", n1)] == 1
    assert got[("hal_o_swarm_agent_resident_memory_bytes", n1)] == 7
    assert got[("hal_o_swarm_agent_systemd_restarts_total", n1)] == 1
    node.status = "offline"
    links.clear()
    got = samples(live)
    assert got[("hal_o_swarm_node_up", n1)] == 0 and got[("hal_o_swarm_node_connected", n1)] == 0
    assert got[("hal_o_swarm_node_last_heartbeat_timestamp_seconds", n1)] == 1_700_000_000.0
    assert not [k for k in got if k[0].startswith("hal_o_swarm_agent_")]
