# Shared by the scripts in this directory. Source it; do not run it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export HEARTLINE_ROOT="$ROOT"
export HEARTLINE_LOCALAWS_DIR="$ROOT/scripts/localaws"
export PATH="/usr/local/go/bin:$PATH"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# as_root runs a command as root (directly, or through sudo).
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

# need_redis installs redis-server from the distribution's packages when it is missing.
need_redis() {
  command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null && return 0
  say "installing redis-server (apt-get)"
  if ! { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null; }; then
    die "redis-server is required and could not be installed: run 'apt-get install redis-server' as root"
  fi
  # Debian starts a system redis on 6379 when it can; Heartline never uses it.
  command -v redis-server >/dev/null || die "redis-server still not on PATH after installing it"
}

# need_promtool installs promtool (Debian's prometheus package) to check and unit-test
# the alert rules in infra/prometheus.
need_promtool() {
  command -v promtool >/dev/null && return 0
  say "installing promtool (apt-get install prometheus)"
  if ! { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }; then
    die "promtool is required and could not be installed: run 'apt-get install prometheus' as root"
  fi
  command -v promtool >/dev/null || die "promtool still not on PATH after installing prometheus"
}

# need_localaws installs kinesalite and dynalite from the lockfile in scripts/localaws.
need_localaws() {
  command -v node >/dev/null || die "node is required for kinesalite/dynalite (install nodejs and npm)"
  local d="$HEARTLINE_LOCALAWS_DIR"
  if [ ! -d "$d/node_modules/kinesalite" ] || [ ! -d "$d/node_modules/dynalite" ] || [ "$d/package-lock.json" -nt "$d/node_modules/.package-lock.json" ]; then
    say "installing kinesalite and dynalite (npm ci, from scripts/localaws/package-lock.json)"
    (cd "$d" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed in $d"
  fi
}

# modules lists every Go module of the workspace.
modules() { (cd "$ROOT" && go list -m -f '{{.Dir}}'); }
