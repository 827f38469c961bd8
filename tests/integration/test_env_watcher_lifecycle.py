"""The env manifest watcher is a service of the supervisor, not a side effect of its HTTP app (issue 16):
with the HTTP API disabled (`server.http_port: 0`) a node that registers still gets the manifest pushed
(an `env_check` no operator asked for, its result stored), and `Supervisor.shutdown` stops the watcher and
every push it started. The supervisor runs in this process (real store, real hub on loopback) so its tasks
can be inspected; the agent side is the real `NodeEnvService` behind a real `SupervisorConnection`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from halswarm.config.supervisor import load_supervisor_config
from halswarm.store.repos import env as env_repo
from halswarm.supervisor.app import Supervisor
from halswarm.supervisor.features.env.service import EnvService
from halswarm.supervisor.features.env.watcher import EnvWatcher
from tests.support.agent_side import EnvAgent
from tests.support.projects import tool_env
from tests.support.supervisor_proc import SupervisorProc
from tests.support.waiting import until

MANIFEST = {"version": "1.0", "defaults": {"docs": {"required": ["README.md"]}}, "projects": {"alpha": {}}}


def _env_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("env-") and not t.done()]


async def test_watcher_pushes_without_http_port_and_stops_at_shutdown(tmp_path: Path) -> None:
    conf = SupervisorProc(tmp_path / "sup", http_port=0)  # only its config writer and ports are used
    conf.write_config()
    cfg, _ = load_supervisor_config(conf.config_path, env={})
    assert cfg.http_port == 0
    project = tmp_path / "alpha"
    project.mkdir()
    (project / "README.md").write_text("# alpha\n")

    sup = Supervisor(cfg)
    await sup.start()
    agent: EnvAgent | None = None
    try:
        assert sup._api is None  # no HTTP server at all
        watcher = sup.services.get(EnvWatcher)
        assert watcher.running and _env_tasks()
        await sup.services.get(EnvService).put_manifest(MANIFEST, "test")

        agent = EnvAgent(conf, "env-node-1", tmp_path / "agent", {"alpha": str(project)}, tool_env(tmp_path / "t"))
        await agent.start()
        pushed = await until(lambda: agent.of_type("env_check"), "the manifest pushed on registration", 20)
        assert pushed[0].args["manifest_version"] == 1 and pushed[0].args["manifest"]["projects"] == {"alpha": {}}
        rows = await until(lambda: sup.reader.run_sync(env_repo.status_rows), "the pushed check stored", 20)
        assert [(r["node_id"], r["project"], r["status"]) for r in rows] == [("env-node-1", "alpha", "ready")]
    finally:
        if agent is not None:
            await agent.stop()
        await sup.shutdown()
    assert not watcher.running
    assert _env_tasks() == []
