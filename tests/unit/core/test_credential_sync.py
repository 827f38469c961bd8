from __future__ import annotations

from halswarm.core.credential_sync import DRIFT, IN_SYNC, UNKNOWN, credential_sync


def test_unknown_until_both_versions_are_known() -> None:
    assert credential_sync(None, 2) == UNKNOWN
    assert credential_sync(2, None) == UNKNOWN
    assert credential_sync(None, None) == UNKNOWN


def test_same_version_is_in_sync_any_other_drifts() -> None:
    assert credential_sync(2, 2) == IN_SYNC
    assert credential_sync(0, 0) == IN_SYNC
    assert credential_sync(1, 2) == DRIFT
    assert credential_sync(3, 2) == DRIFT
