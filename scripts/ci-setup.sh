#!/usr/bin/env bash
# Host set-up for the ops tests (Molecule under podman with real systemd, firewall in a netns,
# ansible-test sanity offline). Idempotent: every step checks before it acts, so a second run
# takes a second or two. Needs root (apt, podman rootful, /etc/containers).
#
#   scripts/ci-setup.sh            # everything
#   HAL_CI_SKIP_APT=1 scripts/ci-setup.sh   # when the packages are known to be there
#   scripts/ci-setup.sh system     # steps 1-3b only: they need no venv, so `make test` runs them
#   scripts/ci-setup.sh python     # steps 4-5 only   while the venv and the npm CLIs install
#
# What it does (the verified recipe of shared/reference/feasibility.md):
#   1. apt packages: podman, runc, debootstrap, openssh-server, ufw, iptables, nftables, sqlite3,
#      prometheus (for promtool: the alert rule tests), prometheus-alertmanager (the receiver tests) ...
#   2. /etc/containers/containers.conf.d/50-halswarm-ci.conf: runc + low default ulimits
#      (no CAP_SYS_RESOURCE here, and crun refuses the cgroup v1 hybrid layout).
#   3. the systemd test image, built once from Debian packages with debootstrap and kept
#      (tag changes when the package list changes); 3b. a copy of it with Debian's PostgreSQL installed.
#   4. a wheelhouse with the package's runtime dependencies for the `network: none` containers, with the
#      `ops` extra (ansible-runner, ansible): the supervisor that remediates other hosts runs playbooks.
#   5. ansible-test's get-pip download replaced by a local stand-in (its CI host is not reachable).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HAL_CI_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

# Keep in sync with tests/support/fleet/env.py (IMAGE, PG_IMAGE, WHEELHOUSE).
IMAGE="${HAL_CI_IMAGE:-localhost/halswarm-ops-systemd:bookworm-5}"
# The same image with Debian's PostgreSQL installed (tests/fleet/test_ops_postgresql.py converges the
# postgresql role in it with no network: the packages come from here, set-up time, not from a test).
# The tag's last part changes with PG_IMAGE_PACKAGES (python3-apt: Ansible's apt module).
PG_IMAGE="${HAL_CI_PG_IMAGE:-${IMAGE%%:*}-pg:${IMAGE##*:}-2}"
PG_IMAGE_PACKAGES="postgresql python3-psycopg2 python3-apt"
WHEELHOUSE="${HAL_CI_WHEELHOUSE:-/var/cache/halswarm-ci/wheelhouse}"
# openssh-server, openssh-client: the supervisor's automatic remediation reaches the agent hosts over SSH
# (roles: hal_supervisor_remediation_ssh); the image ships sshd disabled and without host keys (below).
IMAGE_PACKAGES="python3,python3-venv,systemd,systemd-sysv,dbus,iproute2,iptables,procps,sqlite3,sudo,ca-certificates,openssh-server,openssh-client"
# openjdk-17-jre-headless: the Java runtime of ansible-rulebook's rules engine (tests/e2e/test_eda_rulebook.py).
# chromium chromium-driver: the headless browser of the web console tests and bench (tests/support/browser.py).
APT_PACKAGES=(openssh-server openssh-client iproute2 iptables nftables ufw sqlite3 curl sudo
  podman runc uidmap debootstrap prometheus prometheus-alertmanager openjdk-17-jre-headless chromium chromium-driver
  postgresql)  # the store tests run on PostgreSQL too: a private cluster per session (tests/support/postgres.py)

PHASE="${1:-all}"
case "$PHASE" in all|system|python) ;; *) printf 'ci-setup: unknown phase %s (all, system, python)\n' "$PHASE" >&2; exit 2 ;; esac

log() { printf 'ci-setup: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root"; exit 1
fi

if [ "$PHASE" != python ]; then
# 1. packages -------------------------------------------------------------------------------
if [ -z "${HAL_CI_SKIP_APT:-}" ]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # Only promtool is wanted (tests/integration/test_monitoring_rules.py): the package's server stays off.
  if [ -d /run/systemd/system ] && systemctl is-enabled --quiet prometheus 2>/dev/null; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
    log "disabled the prometheus service (promtool only)"
  fi
fi

# 2. podman configuration -------------------------------------------------------------------
CONF=/etc/containers/containers.conf.d/50-halswarm-ci.conf
WANT_CONF='[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"'
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$WANT_CONF" ]; then
  mkdir -p "$(dirname "$CONF")"
  printf '%s\n' "$WANT_CONF" >"$CONF"
  log "wrote $CONF"
fi

# 3. systemd image ----------------------------------------------------------------------------
if ! podman image exists "$IMAGE"; then
  MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
  ROOTFS=$(mktemp -d /var/tmp/halswarm-rootfs.XXXXXX)
  trap 'rm -rf "$ROOTFS"' EXIT
  log "debootstrap bookworm ($IMAGE_PACKAGES) from $MIRROR"
  debootstrap --variant=minbase --include="$IMAGE_PACKAGES" bookworm "$ROOTFS" "$MIRROR" >/dev/null
  # No getty/udev noise in a container; keep the journal in memory.
  rm -f "$ROOTFS"/etc/systemd/system/getty.target.wants/* || true
  mkdir -p "$ROOTFS/etc/systemd/journald.conf.d"
  printf '[Journal]\nStorage=volatile\n' >"$ROOTFS/etc/systemd/journald.conf.d/50-ci.conf"
  # sshd off and no host keys: instances that share one network namespace would all bind port 22 and
  # every instance would carry the same host key. The agent role starts sshd where an inventory asks
  # (hal_agent_remediation_sshd_listen) and generates that host's own keys.
  rm -f "$ROOTFS"/etc/ssh/ssh_host_* "$ROOTFS"/etc/systemd/system/multi-user.target.wants/ssh.service \
    "$ROOTFS"/etc/systemd/system/sshd.service "$ROOTFS"/etc/systemd/system/sockets.target.wants/ssh.socket
  tar -C "$ROOTFS" -c . | podman import -q --change 'CMD ["/sbin/init"]' - "$IMAGE" >/dev/null
  rm -rf "$ROOTFS"
  trap - EXIT
  log "built $IMAGE"
  # Drop images of older package lists (same repository, other tags).
  for old in $(podman images --format '{{.Repository}}:{{.Tag}}' | grep "^${IMAGE%%:*}:" | grep -vx "$IMAGE" || true); do
    podman rmi -f "$old" >/dev/null 2>&1 || true
  done
fi

# 3b. the PostgreSQL variant: the packages installed into a copy, with network, at set-up time only --------
if ! podman image exists "$PG_IMAGE"; then
  BUILDER="halswarm-ci-pg-build-$$"
  podman rm -f -t 0 "$BUILDER" >/dev/null 2>&1 || true
  log "building $PG_IMAGE ($PG_IMAGE_PACKAGES)"
  podman run --name "$BUILDER" "$IMAGE" sh -c \
    "printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d &&
     apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PG_IMAGE_PACKAGES >/dev/null &&
     apt-get clean && rm -f /usr/sbin/policy-rc.d"
  podman commit -q --change 'CMD ["/sbin/init"]' "$BUILDER" "$PG_IMAGE" >/dev/null
  podman rm -f -t 0 "$BUILDER" >/dev/null
  for old in $(podman images --format '{{.Repository}}:{{.Tag}}' | grep "^${PG_IMAGE%%:*}:" | grep -vx "$PG_IMAGE" || true); do
    podman rmi -f "$old" >/dev/null 2>&1 || true
  done
  log "built $PG_IMAGE"
fi

fi  # system phase

if [ "$PHASE" != system ]; then
# 4. wheelhouse of runtime dependencies (the containers have no network) --------------------
if [ -x "$PY" ]; then
  STAMP="$WHEELHOUSE/.deps-ops-postgres-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
  if [ ! -f "$STAMP" ]; then
    mkdir -p "$WHEELHOUSE"
    log "building the dependency wheelhouse in $WHEELHOUSE"
    "$PY" -m pip wheel -q -w "$WHEELHOUSE" "$ROOT[ops,postgres]" pip setuptools wheel
    rm -f "$WHEELHOUSE"/hal_o_swarm-*.whl
    touch "$STAMP"
  fi
fi

# 5. ansible-test: offline stand-in for its get-pip download ------------------------------
if [ -x "$PY" ] && "$PY" -c 'import ansible_test' 2>/dev/null; then
  PIPV=$("$PY" -c "from ansible_test._internal.python_requirements import get_venv_packages as g; from types import SimpleNamespace as N; print(g(N(version='3.11'))['pip'])")
  CACHE="${HOME:-/root}/.ansible/test/cache"
  STANDIN="$CACHE/get_pip_${PIPV//./_}.py"
  if [ ! -f "$STANDIN" ] || [ ! -f "$CACHE/pip-$PIPV-py3-none-any.whl" ]; then
    mkdir -p "$CACHE"
    "$PY" -m pip download -q --no-deps "pip==$PIPV" -d "$CACHE"
    cat >"$STANDIN" <<PY
import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "pip-$PIPV-py3-none-any.whl"))
from pip._internal.cli.main import main
sys.exit(main(["install", "--upgrade", "--force-reinstall"] + [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]))
PY
    log "installed the ansible-test get-pip stand-in ($STANDIN)"
  fi
fi

fi  # python phase

log "$PHASE ready (images $IMAGE $PG_IMAGE, wheelhouse $WHEELHOUSE)"
