#!/usr/bin/env bash
# Install the pinned coding-agent CLIs used by the e2e tests into $ROOT/.tools/npm.
#
# - Idempotent: a package whose installed version already matches the pin is skipped.
# - Never uses --ignore-scripts: opencode-ai and claude-code need their postinstall
#   to hard-link the native binary (without it the binary is a stub that only prints an error).
# - Installs nothing globally; the tests find the binaries under .tools/npm/node_modules/.bin/.
#
# Usage: scripts/install-test-clis.sh [opencode|claude|codex ...]   (default: all three)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$ROOT/.tools/npm"

declare -A PINS=(
  [opencode]="opencode-ai@1.18.33"
  [claude]="@anthropic-ai/claude-code@2.1.197"
  [codex]="@openai/codex@0.171.0"
)

if ! command -v npm >/dev/null 2>&1; then
  echo "install-test-clis: npm not found on PATH" >&2
  exit 1
fi

wanted=("$@")
if [ ${#wanted[@]} -eq 0 ]; then
  wanted=(opencode claude codex)
fi

installed_version() {
  # $1 = package name; prints the installed version or nothing.
  local pkg_json="$PREFIX/node_modules/$1/package.json"
  [ -f "$pkg_json" ] || return 0
  node -e 'try{process.stdout.write(require(process.argv[1]).version||"")}catch(e){}' "$pkg_json"
}

binary_ok() {
  # A leftover stub (postinstall not run) is a few hundred bytes; the real binary is >100 MB.
  case "$1" in
    opencode) [ -x "$PREFIX/node_modules/.bin/opencode" ] \
      && [ "$(stat -L -c %s "$PREFIX/node_modules/opencode-ai/bin/opencode.exe" 2>/dev/null || echo 0)" -gt 1000000 ] ;;
    claude) [ -x "$PREFIX/node_modules/.bin/claude" ] ;;
    codex) [ -x "$PREFIX/node_modules/.bin/codex" ] ;;
  esac
}

to_install=()
for tool in "${wanted[@]}"; do
  spec="${PINS[$tool]:-}"
  if [ -z "$spec" ]; then
    echo "install-test-clis: unknown tool '$tool' (known: ${!PINS[*]})" >&2
    exit 2
  fi
  name="${spec%@*}"
  version="${spec##*@}"
  have="$(installed_version "$name")"
  if [ "$have" = "$version" ] && binary_ok "$tool"; then
    echo "install-test-clis: $name@$version already installed"
  else
    to_install+=("$spec")
  fi
done

if [ ${#to_install[@]} -gt 0 ]; then
  mkdir -p "$PREFIX"
  echo "install-test-clis: npm install ${to_install[*]}"
  npm install --prefix "$PREFIX" --no-audit --no-fund --save-exact "${to_install[@]}"
fi

for tool in "${wanted[@]}"; do
  "$PREFIX/node_modules/.bin/$tool" --version 2>/dev/null | head -n1 | sed "s/^/install-test-clis: $tool --version: /" \
    || echo "install-test-clis: WARNING: $tool --version failed" >&2
done
