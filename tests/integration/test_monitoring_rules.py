"""The shipped alert rules under Prometheus' own promtool (issue 18 point 2): `promtool check rules`, the
unit tests next to the rules (`promtool test rules`: each rule fires on one series and stays quiet on
another), and proof that those tests can fail: a rule set that always fires and one that never fires
both fail them for every rule. Then the halswarm.ops.monitoring playbook on localhost against a
throw-away Prometheus configuration: check mode changes nothing, a run installs the rules and merges the
scrape job (validated by promtool) and reloads a real Prometheus through its HTTP endpoint, which then
serves every rule; a second run changes nothing.

CI installs promtool and prometheus (Debian package `prometheus`, scripts/ci-setup.sh); elsewhere the
tests are skipped without them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.ports import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "collections/ansible_collections/halswarm/ops/roles/monitoring/files"
RULES = FILES / "hal-o-swarm.rules.yml"
RULE_TESTS = FILES / "hal-o-swarm.rules.test.yml"
BIN = Path(sys.executable).parent


def program(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{name} is missing in CI: scripts/ci-setup.sh installs the prometheus package")
    pytest.skip(f"{name} not installed (apt-get install prometheus)")


def promtool() -> str:
    return program("promtool")


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=240, check=False, env=env)


def alert_names() -> set[str]:
    return {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}


def test_promtool_checks_the_rules() -> None:
    done = run([promtool(), "check", "rules", str(RULES)], FILES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in done.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    done = run([promtool(), "test", "rules", str(RULE_TESTS)], FILES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def mutated(tmp_path: Path, wrap: str) -> list[str]:
    """Run the unit tests against the rules with every `expr` rewritten by `wrap`; the failing alerts."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule["expr"] = wrap.format(expr=rule["expr"])
    (tmp_path / RULES.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copy2(RULE_TESTS, tmp_path / RULE_TESTS.name)
    done = run([promtool(), "test", "rules", RULE_TESTS.name], tmp_path)
    assert done.returncode != 0, "the rule tests passed against broken rules"
    return re.findall(r"alertname: (\w+),", done.stdout + done.stderr)


def test_the_rule_tests_catch_a_rule_that_always_fires(tmp_path: Path) -> None:
    # An extra series (instance "mutant") on every evaluation: an alert no expectation lists.
    wrap = '({expr}) or label_replace(vector(1), "instance", "mutant", "", "")'
    assert set(mutated(tmp_path, wrap)) == alert_names()


def test_the_rule_tests_catch_a_rule_that_never_fires(tmp_path: Path) -> None:
    assert set(mutated(tmp_path, "({expr}) unless on() vector(1)")) == alert_names()


PROMETHEUS_YML = """\
global:
  scrape_interval: 15s
rule_files:
  - {rules}/../other.rules.yml
  - {rules}/../more.rules.yml
  - {rules}/../zzz.rules.yml
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['localhost:9090']
  - job_name: hal-supervisor
    static_configs:
      - targets: ['stale:8421']
"""


@contextmanager
def prometheus(config: Path, data: Path) -> Iterator[str]:
    """A real Prometheus on loopback with its lifecycle API (POST /-/reload); stopped on exit."""
    url = f"http://127.0.0.1:{free_port()}"
    log = data.parent / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([program("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={data}",
                                 f"--web.listen-address={url.removeprefix('http://')}", "--web.enable-lifecycle",
                                 "--log.level=warn"], stdout=out, stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {log.read_text()[-2000:]}")
            try:
                return httpx.get(url + "/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, "prometheus ready", 60, interval=0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def loaded_rules(url: str) -> dict[str, list[str]]:
    groups = httpx.get(url + "/api/v1/rules", timeout=5).json()["data"]["groups"]
    return {g["name"]: [r["name"] for r in g["rules"]] for g in groups}


def test_monitoring_playbook_installs_rules_and_scrape_job(tmp_path: Path) -> None:
    tool = promtool()
    rules_dir, config = tmp_path / "rules", tmp_path / "prometheus.yml"
    for name in ("other", "more", "zzz"):
        (tmp_path / f"{name}.rules.yml").write_text("groups: []\n")
    config.write_text(PROMETHEUS_YML.format(rules=rules_dir))
    before = config.read_text()
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {
        "hal_prometheus": {"hosts": {"localhost": {"ansible_connection": "local",
                                                   "ansible_python_interpreter": sys.executable}}},
        "hal_supervisors": {"hosts": {"sup-1": None, "sup-2": None}}}}}))
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True, check=True).stdout.strip()
    with prometheus(config, tmp_path / "data") as url:
        assert set(loaded_rules(url)) == set()  # the three placeholder files hold no group
        (tmp_path / "vars.yml").write_text(yaml.safe_dump({
            "ansible_become": False, "hal_monitoring_rules_dir": str(rules_dir),
            "hal_monitoring_prometheus_config": str(config), "hal_monitoring_promtool": tool,
            "hal_monitoring_reload": "http", "hal_monitoring_reload_url": url + "/-/reload",
            "hal_monitoring_rules_owner": user, "hal_monitoring_rules_group": group}))
        play_and_check(tmp_path, config, rules_dir, tool, before, url)


def play_and_check(tmp_path: Path, config: Path, rules_dir: Path, tool: str, before: str, url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}", ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"), ANSIBLE_REMOTE_TEMP=str(tmp_path / "tmp"))
    play = [str(BIN / "ansible-playbook"), "-i", "hosts.yml", "halswarm.ops.monitoring", "-e", "@vars.yml"]

    checked = run([*play, "--check", "--diff"], tmp_path, env)
    assert checked.returncode == 0, checked.stdout[-4000:] + checked.stderr[-2000:]
    assert config.read_text() == before and not rules_dir.exists(), "check mode changed something"
    assert "hal-o-swarm.rules.yml" in checked.stdout  # the diff shows what would be written

    first = run(play, tmp_path, env)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert (rules_dir / RULES.name).read_text() == RULES.read_text()
    doc = yaml.safe_load(config.read_text())
    jobs = [j for j in doc["scrape_configs"] if j["job_name"] == "hal-supervisor"]
    assert len(jobs) == 1 and jobs[0]["static_configs"] == [{"targets": ["sup-1:8421", "sup-2:8421"]}]
    assert "authorization" not in jobs[0]  # GET /metrics needs no token
    assert [j["job_name"] for j in doc["scrape_configs"]] == ["prometheus", "hal-supervisor"]
    assert doc["rule_files"] == [f"{rules_dir}/../{name}.rules.yml" for name in ("other", "more", "zzz")] + [
        f"{rules_dir}/*.rules.yml"]  # existing entries kept in their order
    checked_config = run([tool, "check", "config", str(config)], tmp_path)
    assert checked_config.returncode == 0, checked_config.stdout + checked_config.stderr
    # The handler reloaded the running Prometheus: it now evaluates every shipped rule.
    shipped = {g["name"]: [r["alert"] for r in g["rules"]] for g in yaml.safe_load(RULES.read_text())["groups"]}
    assert loaded_rules(url) == shipped
    jobs_live = yaml.safe_load(httpx.get(url + "/api/v1/status/config", timeout=5).json()["data"]["yaml"])
    assert "hal-supervisor" in [j["job_name"] for j in jobs_live["scrape_configs"]]

    again = run(play, tmp_path, env)
    assert again.returncode == 0, again.stdout[-4000:]
    assert re.search(r"localhost\s*:\s*ok=\d+\s+changed=0\b", again.stdout), again.stdout[-2000:]
    assert "RUNNING HANDLER" not in again.stdout  # nothing changed: no reload
