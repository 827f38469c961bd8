"""Every capture a test reads lives under tests/fixtures/: no test reaches outside the checkout
(a clone elsewhere must run exactly the tests CI runs, none skipped for a missing file)."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"""["'](/work/|\.\./shared|[^"']*shared/reference)""")
PARENT_OF_CHECKOUT = re.compile(r"parents\[\d\]\.parent\s*/")


def test_no_test_reads_outside_the_checkout():
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        if path == Path(__file__).resolve():
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if OUTSIDE.search(line) or PARENT_OF_CHECKOUT.search(line):
                offenders.append(f"{path.relative_to(TESTS)}:{number}: {line.strip()}")
    assert not offenders, "move the file under tests/fixtures/:\n" + "\n".join(offenders)


def test_captures_are_present():
    captures = sorted(p.name for p in (TESTS / "fixtures" / "opencode").glob("*.raw"))
    assert {"sse_global.raw", "sse2_global.raw", "sse4_global.raw", "sse_event.raw", "sse_api.raw"} <= set(captures)
