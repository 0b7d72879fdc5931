#!/usr/bin/env bash
# Checks scripts/deploy/Containerfile as far as a machine without a container engine can:
#
#  1. it parses and lints clean (dockerfile-utils, the parser behind VS Code's Dockerfile
#     support; a broken copy must be flagged, so the lint is known to work);
#  2. its shape: a Rust build stage and a debian-slim runtime of the same Debian release,
#     a non-root USER, HEALTHCHECK, ENV SSE_BIND=0.0.0.0:5001, EXPOSE 5001, and every COPY
#     source exists in the repository (build context = repository root);
#     and the build stage's COPY set alone compiles (cargo check --locked --offline);
#  3. the release binary needs only libraries debian-slim has (libc, libgcc_s);
#  4. what the image would run, run here: the binary as the image's UID 10001 with the image's
#     environment (the wildcard bind moved to a free loopback port), and healthcheck.sh, as the
#     HEALTHCHECK runs it, says healthy for that hub, and unhealthy (bounded in time) for a
#     refused port and for a port that accepts but never answers.
#
# Usage: tests/deploy/container_check.sh   (after `npm ci` in tests/deploy; SSECAST_BIN overrides)
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CF="$REPO/scripts/deploy/Containerfile"
HEALTH="$REPO/scripts/deploy/healthcheck.sh"
BIN=${SSECAST_BIN:-$REPO/target/release/ssecast}
LINT="$HERE/node_modules/.bin/dockerfile-utils"

pass=0
fail=0
ok() { echo "ok - $*"; pass=$((pass + 1)); }
bad() { echo "FAIL - $*"; fail=$((fail + 1)); }

TMP=$(mktemp -d /tmp/ssecast-container-XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT

[ -x "$BIN" ] || { echo "FAIL - ssecast binary not found at $BIN: run 'cargo build --release' first"; echo "0 passed, 1 failed"; exit 1; }
[ -x "$LINT" ] || { echo "FAIL - $LINT missing: run 'npm ci' in tests/deploy (run.sh does)"; echo "0 passed, 1 failed"; exit 1; }

# ---- 1. lint ----
if out=$("$LINT" lint "$CF" 2>&1) && [ -z "$out" ]; then
  ok "dockerfile-utils lint: Containerfile is clean"
else
  bad "dockerfile-utils lint:"$'\n'"$out"
fi
sed -e 's/^HEALTHCHECK --interval/HEALTHCHECK --intervall/' -e 's/^EXPOSE 5001/EXPOSE five/' "$CF" > "$TMP/broken.Containerfile"
if "$LINT" lint "$TMP/broken.Containerfile" >/dev/null 2>&1; then
  bad "negative control: lint accepted a broken copy, so the lint above proves nothing"
else
  ok "negative control: lint flags a broken copy"
fi

# ---- 2. shape ----
# Instructions with continuation lines joined, comments dropped.
instr=$(sed -e '/^[[:space:]]*#/d' "$CF" | sed -e ':a' -e '/\\$/N; s/\\\n//; ta')
froms=$(printf '%s\n' "$instr" | grep -E '^FROM ')
n_from=$(printf '%s\n' "$froms" | grep -c .)
first=$(printf '%s\n' "$froms" | head -1); last=$(printf '%s\n' "$froms" | tail -1)
rel() { printf '%s' "$1" | grep -oE '(bookworm|trixie|bullseye)' | head -1; }
if [ "$n_from" -ge 2 ] && [[ $first =~ rust ]] && [[ $first =~ " AS " || $first =~ " as " ]] && [[ $last =~ debian:[a-z]+-slim ]]; then
  ok "multi-stage: $(echo "$first" | cut -c6-) -> $(echo "$last" | cut -c6-)"
else
  bad "expected a rust builder stage and a debian-slim runtime, got: $(echo $froms)"
fi
if [ -n "$(rel "$first")" ] && [ "$(rel "$first")" = "$(rel "$last")" ]; then
  ok "builder and runtime are the same Debian release ($(rel "$last")): the binary's glibc matches"
else
  bad "builder ($(rel "$first")) and runtime ($(rel "$last")) Debian releases differ or are unpinned"
fi
runtime=$(printf '%s\n' "$instr" | awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}')
user=$(printf '%s\n' "$runtime" | sed -n 's/^USER[[:space:]]\+//p' | tail -1)
if [ -n "$user" ] && [[ ! $user =~ ^(root|0)(:|$) ]]; then ok "runtime runs as non-root USER $user"; else bad "runtime USER is '${user:-unset (root)}'"; fi
printf '%s\n' "$runtime" | grep -qE '^HEALTHCHECK .*CMD' && ok "HEALTHCHECK present" || bad "no HEALTHCHECK in the runtime stage"
printf '%s\n' "$runtime" | grep -qxE 'ENV SSE_BIND=0\.0\.0\.0:5001' && ok "ENV SSE_BIND=0.0.0.0:5001" || bad "no ENV SSE_BIND=0.0.0.0:5001"
printf '%s\n' "$runtime" | grep -qxE 'EXPOSE 5001' && ok "EXPOSE 5001" || bad "no EXPOSE 5001"
missing=()
while read -r src; do
  [ -e "$REPO/$src" ] || missing+=("$src")
done < <(printf '%s\n' "$instr" | grep -E '^COPY ' | grep -v -- '--from=' | awk '{for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i}')
if [ ${#missing[@]} -eq 0 ]; then ok "every COPY source exists in the build context (repository root)"; else bad "COPY sources missing: ${missing[*]}"; fi

# The build stage's context is enough: copy exactly what it COPYs and compile that alone
# (cargo check, offline, from the local registry cache that the release build filled).
if [ ${#missing[@]} -eq 0 ] && command -v cargo >/dev/null; then
  mkdir -p "$TMP/ctx"
  while read -r src; do mkdir -p "$TMP/ctx/$(dirname "$src")"; cp -r "$REPO/$src" "$TMP/ctx/$src"; done < <(printf '%s\n' "$instr" | grep -E '^COPY ' | grep -v -- '--from=' | awk '{for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i}' | grep -v '^scripts/')
  if out=$(cd "$TMP/ctx" && CARGO_TARGET_DIR="$TMP/ctx-target" timeout 600 cargo check --release --locked --offline --quiet 2>&1); then
    ok "the build stage's COPY set compiles on its own (cargo check --release --locked)"
  else
    bad "the build stage's COPY set does not compile on its own:"$'\n'"$(printf '%s\n' "$out" | tail -15)"
  fi
  rm -rf "$TMP/ctx" "$TMP/ctx-target"
fi

# ---- 3. libraries ----
libs=$(ldd "$BIN" 2>&1 | awk '{print $1}' | grep -vE '^(linux-vdso\.so|/lib64/ld-linux)' | sort -u | tr '\n' ' ')
extra=$(printf '%s\n' $libs | grep -vE '^(libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1)$' || true)
if [ -z "$extra" ]; then ok "binary needs only base libraries debian-slim has: $libs"; else bad "binary needs libraries not in debian-slim: $extra"; fi

# ---- 4. run what the image runs ----
uid=$(printf '%s' "$user" | cut -d: -f1); gid=$(printf '%s' "$user" | cut -d: -f2); [ "$gid" = "$uid" ] || [ -n "$gid" ] || gid=$uid
[[ $uid =~ ^[0-9]+$ ]] || uid=10001
[[ $gid =~ ^[0-9]+$ ]] || gid=$uid
chmod 0755 "$TMP"
cp "$BIN" "$TMP/ssecast"; chmod 0755 "$TMP/ssecast"
as_user=()
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  as_user=(setpriv --reuid="$uid" --regid="$gid" --clear-groups --no-new-privs)
else
  echo "# not root or no setpriv: running as $(id -un)"
fi
: > "$TMP/ssecast.log"
"${as_user[@]}" env -i PATH=/usr/bin:/bin SSE_BIND=127.0.0.1:0 "$TMP/ssecast" > "$TMP/ssecast.log" 2>&1 &
PIDS+=($!)
port=
for _ in $(seq 1 100); do
  port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/ssecast.log" | head -1)
  [ -n "$port" ] && break
  sleep 0.05
done
if [ -z "$port" ]; then
  bad "ssecast did not start as UID $uid:"$'\n'"$(cat "$TMP/ssecast.log")"
else
  ok "ssecast runs as UID $uid (the image's USER) on 127.0.0.1:$port"
  # The image's SSE_BIND is the wildcard 0.0.0.0:5001: the check maps a wildcard host to loopback.
  if h=$("${as_user[@]}" env -i PATH=/usr/bin:/bin SSE_BIND="0.0.0.0:$port" bash "$HEALTH"); then
    ok "healthcheck (as UID $uid, SSE_BIND=0.0.0.0:$port): $h"
  else
    bad "healthcheck against a live hub: $h"
  fi
fi
kill -TERM "${PIDS[0]}" 2>/dev/null; wait "${PIDS[0]}" 2>/dev/null

t0=$(date +%s)
if h=$(SSE_BIND="127.0.0.1:$port" timeout 10 bash "$HEALTH"); then
  bad "healthcheck says healthy with the hub stopped: $h"
else
  ok "healthcheck with the hub stopped: $h"
fi
# A port that accepts (kernel backlog) but never answers: the check must give up on its own.
python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True); time.sleep(20)
' > "$TMP/mute.port" &
PIDS+=($!)
for _ in $(seq 1 50); do [ -s "$TMP/mute.port" ] && break; sleep 0.05; done
mute=$(head -1 "$TMP/mute.port")
t0=$(date +%s%N)
if h=$(SSE_BIND="127.0.0.1:$mute" timeout 10 bash "$HEALTH"); then
  bad "healthcheck says healthy for a mute port: $h"
else
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  if [ "$ms" -lt 5000 ]; then ok "healthcheck with a mute port: '$h' after ${ms} ms"; else bad "healthcheck took ${ms} ms on a mute port"; fi
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
