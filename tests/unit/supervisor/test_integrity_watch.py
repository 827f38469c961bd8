"""IntegrityWatch: a failed background check goes to the corruption path once; a lock is not damage."""

from __future__ import annotations

import pytest

from halswarm.config.errors import ConfigError
from halswarm.supervisor.features.integrity.service import IntegrityWatch, is_busy
from halswarm.supervisor.features.integrity.settings import IntegritySettings
from tests.support.waiting import on_loop


class _Check:
    def __init__(self, answers: list[str | None]) -> None:
        self.answers = answers
        self.interrupted = False

    def __call__(self) -> str | None:
        return self.answers.pop(0)

    def interrupt(self) -> None:
        self.interrupted = True


async def test_failure_goes_to_the_corruption_path_and_a_lock_does_not() -> None:
    failures: list[str] = []
    watch = IntegrityWatch(_Check([None, "database is locked", "*** in database main *** Page 7: bad"]),
                           IntegritySettings(), failures.append)
    assert await watch.run_once() is None and failures == []
    assert await watch.run_once() == "database is locked" and failures == []
    await watch.run_once()
    assert failures == ["*** in database main *** Page 7: bad"] and watch.checks == 3 and watch.passed == 1


async def test_stop_interrupts_a_check_in_progress() -> None:
    check = _Check([])
    watch = IntegrityWatch(check, IntegritySettings(check_hours=0), lambda _: None)
    await watch.stop()
    assert check.interrupted


def test_settings_refuse_a_negative_interval() -> None:
    with pytest.raises(ConfigError, match="integrity_check_hours"):
        IntegritySettings(check_hours=-1)
    assert is_busy("database table is locked") and not is_busy("malformed")


async def test_after_a_start_that_skipped_the_check_it_runs_soon_even_with_no_schedule() -> None:
    watch = IntegrityWatch(_Check([None]), IntegritySettings(check_hours=0), lambda _: None, first_delay_sec=0)
    await watch.start()
    try:
        await on_loop(lambda: watch.checks == 1, "the background check soon after start", 10)
    finally:
        await watch.stop()
