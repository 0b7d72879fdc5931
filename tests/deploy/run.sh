#!/usr/bin/env bash
# Every deployment test, with real clients, against the ssecast release binary:
#
#   nginx_test.py          ssecast behind nginx with scripts/deploy/nginx/ssecast.conf
#   browser.test.mjs       headless Chromium's EventSource (playwright-core + /usr/bin/chromium)
#   browser_nginx.test.mjs the same browser through nginx, across an ssecast restart
#   eventsource.test.mjs   the npm `eventsource` client
#   metrics_test.py        GET /metrics read by Prometheus' parser (PyPI prometheus_client)
#   requests_test.py       Python requests reading the stream directly (iter_lines, Last-Event-ID)
#   private_browser.test.mjs  a cross-origin page subscribing to a private channel with the token cookie
#   ui.test.mjs            the built-in page (GET /) driven in headless Chromium; writes docs/ui.png
#   systemd_verify.sh      scripts/deploy/ssecast.service + ssecast.env.example
#   container_check.sh     scripts/deploy/Containerfile + healthcheck.sh (no container engine here)
#
# Installs what it needs (Debian: chromium nginx systemd strace; npm ci in tests/deploy; pip:
# prometheus_client), builds the
# release binary (unless SSECAST_BIN names one), runs everything, and fails if anything is
# missing or fails: nothing skips itself. Each suite is bounded in time.
#
# Usage: tests/deploy/run.sh [suite ...]     (suites: nginx browser eventsource systemd container metrics ui requests)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=../lib/suites.sh
source "$REPO/tests/lib/suites.sh"
export DEBIAN_FRONTEND=noninteractive

die() { echo "deploy tests: $*" >&2; exit 1; }

# ---- system packages ----
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${need[*]} and not root: apt-get install ${need[*]}"
  echo "== apt-get install ${need[*]}"
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
[ -x /usr/bin/chromium ] || die "/usr/bin/chromium still missing after apt-get install chromium"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || die "nginx still missing after apt-get install nginx"
command -v systemd-analyze >/dev/null 2>&1 || die "systemd-analyze still missing after apt-get install systemd"

# ---- python packages ----
if ! python3 -c 'import prometheus_client' >/dev/null 2>&1; then
  echo "== pip install prometheus_client"
  if ! python3 -m pip install --quiet prometheus_client; then
    # A Debian system python refuses pip installs (PEP 668): take Debian's package then.
    [ "$(id -u)" = 0 ] || die "pip install prometheus_client failed and not root: apt-get install python3-prometheus-client"
    echo "== pip refused: apt-get install python3-prometheus-client"
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends python3-prometheus-client >/dev/null
  fi
fi
python3 -c 'import prometheus_client' >/dev/null 2>&1 || die "prometheus_client still missing after pip install prometheus_client"
if ! python3 -c 'import requests' >/dev/null 2>&1; then
  echo "== pip install requests"
  python3 -m pip install --quiet requests || apt-get install -y -q --no-install-recommends python3-requests >/dev/null
fi
python3 -c 'import requests' >/dev/null 2>&1 || die "python requests still missing after pip install requests"

# ---- node tooling ----
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || die "node and npm are required (Node >= 20)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "Node >= 20 required (playwright-core, eventsource 4), found $(node --version)"
echo "== npm ci (tests/deploy)"
npm_ci
[ -d "$HERE/node_modules/playwright-core" ] && [ -d "$HERE/node_modules/eventsource" ] && [ -x "$HERE/node_modules/.bin/dockerfile-utils" ] \
  || die "npm ci in tests/deploy did not install playwright-core, eventsource and dockerfile-utils"

# ---- the binary ----
release_binary

# ---- the suites ----
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(nginx browser private eventsource systemd container metrics ui requests)
for s in "${suites[@]}"; do
  case $s in
    nginx) run nginx 180 python3 nginx_test.py ;;
    browser) run browser 300 node --test --test-concurrency=1 browser.test.mjs browser_nginx.test.mjs ;;
    eventsource) run eventsource 180 node --test --test-concurrency=1 eventsource.test.mjs ;;
    systemd) run systemd 180 bash systemd_verify.sh ;;
    container) run container 900 bash container_check.sh ;;
    metrics) run metrics 120 python3 metrics_test.py ;;
    requests) run requests 60 python3 requests_test.py ;;
    ui) run ui 180 node --test --test-concurrency=1 ui.test.mjs ;;
    private) run private 120 node --test --test-concurrency=1 private_browser.test.mjs ;;
    *) die "unknown suite '$s' (nginx browser private eventsource systemd container metrics ui requests)" ;;
  esac
done

finish deploy
