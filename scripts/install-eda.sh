#!/usr/bin/env bash
# Install the pinned ansible-rulebook used by tests/e2e/test_eda_rulebook.py into $ROOT/.tools/eda.
#
# - Its own venv, not the project's: every ansible-rulebook release pins websockets to 15.0.x, the
#   supervisor allows up to 17; installed together, pip would move the whole test environment to 15.0.
# - ansible-core comes along: the rulebook's run_playbook action calls ansible-playbook/ansible-galaxy
#   from the same PATH. The Java 17 runtime it needs is a Debian package (scripts/ci-setup.sh).
# - Idempotent: skipped when the pinned version is already there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$ROOT/.tools/eda"
PYTHON="${PYTHON:-python3}"
PINS=("ansible-rulebook==1.3.2" "ansible-core>=2.19,<2.20")

if [ -x "$PREFIX/bin/ansible-rulebook" ] && \
   "$PREFIX/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("ansible-rulebook") != "1.3.2")' 2>/dev/null; then
  exit 0
fi
"$PYTHON" -m venv "$PREFIX"
"$PREFIX/bin/pip" install -q --disable-pip-version-check "${PINS[@]}"
echo "install-eda: ansible-rulebook installed in $PREFIX" >&2
