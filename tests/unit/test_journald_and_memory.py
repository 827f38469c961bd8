"""Journald priorities on log lines and the memory warning against MemoryMax (issue 23, point 5)."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import pytest

from halswarm import logsetup
from halswarm.core.memory_limit import cgroup_paths, over_share, parse_limit, rss_from_status, warning_text
from halswarm.core.syslog_priority import journal_stream_matches, prefix_lines, syslog_priority
from halswarm.journald import stream_is_journal
from halswarm.memwatch import MemoryWatch, read_memory_max, read_rss


@pytest.mark.parametrize(("level", "prio"), [(logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
                                             (logging.INFO, 6), (logging.DEBUG, 7), (25, 6), (45, 3)])
def test_levels_map_to_syslog_priorities(level: int, prio: int) -> None:
    assert syslog_priority(level) == prio


def test_every_line_is_prefixed() -> None:
    assert prefix_lines("a\nb", 3) == "<3>a\n<3>b"


def test_journal_stream_must_name_our_stream() -> None:
    assert journal_stream_matches("8:1234", 8, 1234)
    assert not journal_stream_matches("8:1234", 8, 999)
    assert not journal_stream_matches(None, 8, 1234)
    assert not journal_stream_matches("garbage", 8, 1234)


def _log_through(tmp_path: Path, fmt: str, journal: bool, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    path = tmp_path / f"stderr-{fmt}-{journal}"
    with open(path, "w") as stream:
        st = os.fstat(stream.fileno())
        if journal:
            monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        else:
            monkeypatch.setenv("JOURNAL_STREAM", "1:1")  # inherited from a parent: not our stream
        root = logging.getLogger()
        saved = root.handlers[:], root.level
        try:
            logsetup.setup_logging("debug", fmt, stream=stream)
            log = logging.getLogger("halswarm.test")
            log.error("disk %s failed", "sda")
            log.warning("memory high")
            log.info("hello")
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("crash")
        finally:
            root.handlers[:], _ = saved
            root.setLevel(saved[1])
    return path.read_text().splitlines()


def test_json_lines_carry_priority_and_stay_json_under_journald(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    lines = _log_through(tmp_path, "json", True, monkeypatch)
    assert [ln[:3] for ln in lines] == ["<3>", "<4>", "<6>", "<3>"]
    docs = [json.loads(ln[3:]) for ln in lines]
    assert docs[0]["msg"] == "disk sda failed" and docs[0]["level"] == "error"
    assert "ValueError: boom" in docs[3]["exc"]


def test_text_traceback_keeps_its_priority_on_every_line(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    lines = _log_through(tmp_path, "text", True, monkeypatch)
    tail = lines[3:]
    assert len(tail) > 2 and all(ln.startswith("<3>") for ln in tail)


def test_no_prefix_when_stderr_is_not_the_journal(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    lines = _log_through(tmp_path, "json", False, monkeypatch)
    assert json.loads(lines[0])["level"] == "error"
    assert not stream_is_journal(io.StringIO())


# -- memory ----------------------------------------------------------------------------------------
def test_cgroup_parsing() -> None:
    assert cgroup_paths("0::/system.slice/hal-supervisor.service\n") == ("/system.slice/hal-supervisor.service", None)
    assert cgroup_paths("4:memory:/docker/x\n1:cpu:/\n0::/\n") == ("/", "/docker/x")
    assert parse_limit("max\n") is None and parse_limit("2147483648\n") == 2 << 30
    assert parse_limit("9223372036854771712") is None and parse_limit("junk") is None
    assert rss_from_status("Name:\tx\nVmRSS:\t  2048 kB\n") == 2 << 20
    assert over_share(81, 100, 80) and not over_share(79, 100, 80) and not over_share(10**12, None, 80)


def test_warning_names_memory_and_the_figures() -> None:
    text = warning_text(int(1.7 * (1 << 30)), 2 << 30, 80)
    assert text.startswith("memory:") and "85% of MemoryMax 2.00 GiB" in text and "80%" in text


def test_reads_a_v2_unit_cgroup(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text("0::/system.slice/hal-agent.service\n")
    (proc / "status").write_text("VmRSS:\t1024 kB\n")
    unit = tmp_path / "cg" / "system.slice" / "hal-agent.service"
    unit.mkdir(parents=True)
    (unit / "memory.max").write_text("4294967296\n")
    assert read_memory_max(tmp_path / "cg", proc) == 4 << 30
    (unit / "memory.max").write_text("max\n")
    assert read_memory_max(tmp_path / "cg", proc) is None
    assert read_rss(proc) == 1 << 20


def test_real_procfs_is_readable() -> None:
    assert (read_rss() or 0) > 0
    read_memory_max()  # whatever this host says, it must not raise


def test_watch_warns_once_then_repeats_then_recovers(caplog: pytest.LogCaptureFixture) -> None:
    state = {"rss": 900, "now": 0.0}
    watch = MemoryWatch(80, limit_fn=lambda: 1000, rss_fn=lambda: state["rss"], clock=lambda: state["now"])
    with caplog.at_level(logging.INFO, logger="halswarm.memory"):
        assert watch.check()
        state["now"] = 60.0
        assert watch.check()
        state["now"] = 700.0
        assert watch.check()
        state["rss"] = 100
        assert not watch.check()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("memory" in r.getMessage() and "90%" in r.getMessage() for r in warnings)
    assert any("back to 10%" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


def test_no_limit_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    watch = MemoryWatch(80, limit_fn=lambda: None, rss_fn=lambda: 10**12)
    with caplog.at_level(logging.INFO, logger="halswarm.memory"):
        assert not watch.check()
    assert not caplog.records
