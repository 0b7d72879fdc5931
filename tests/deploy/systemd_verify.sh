#!/usr/bin/env bash
# Checks scripts/deploy/ssecast.service and ssecast.env.example.
#
#  1. `systemd-analyze verify` on the unit, strictly: any message fails (verify itself exits 0
#     on "Unknown key ... ignoring" and similar). Here (a container whose PID 1 is not systemd)
#     verify works offline with --root pointing at a scratch tree holding the unit, the system's
#     own unit files (for default dependencies such as sysinit.target) and the binary at the
#     unit's ExecStart path. A deliberately broken copy must produce messages, proving that the
#     check can fail here.
#  2. `systemd-analyze security --offline=true`: the sandbox's exposure level must stay <= 2.0.
#  3. The directives the deployment relies on are present; TimeoutStopSec exceeds the grace.
#  4. The environment file is real input: the release binary started with exactly those
#     variables (parsed as systemd's EnvironmentFile= does, SSE_BIND moved to a free loopback
#     port), as an unprivileged user with no capabilities, no_new_privs and LimitNOFILE=1048576
#     (what DynamicUser=, CapabilityBoundingSet=, NoNewPrivileges= and LimitNOFILE= give it),
#     listens, serves a stream, publishes, status, a preflight and a 404, and exits 0 on SIGTERM;
#     meanwhile strace records every system call and socket family it uses, which must all be
#     allowed by the unit's SystemCallFilter=@system-service ~@privileged and
#     RestrictAddressFamilies= (what systemd would enforce with EPERM/EAFNOSUPPORT).
#  5. The template scripts/deploy/ssecast@.service: verify on an instance (ssecast@0) strictly, and
#     a non-numeric instance (ssecast@x) flagged, which shows %i reaches CPUAffinity=; exposure
#     <= 2.0; every sandbox line of ssecast.service is in it; its shared-port settings are there and
#     the env file does not override them. Then two instances run as the template would start
#     them (systemd is not PID 1 here): the env file's variables (SSE_BIND on a free port), then
#     the template's Environment= with %i = 0 and 1 (admin port moved to a free one), pinned with
#     taskset as CPUAffinity=%i does, as the same unprivileged user; 40 streams on the shared port
#     reach both (each one's admin address says how many it holds), the admin address refuses
#     /events, a process of another user cannot join the port (exit 1, the one-UID message), and
#     both exit 0 on SIGTERM. Instance 0 runs under strace for the syscall check of item 4.
#
# Usage: tests/deploy/systemd_verify.sh      (SSECAST_BIN overrides the binary)
# Installs systemd (for systemd-analyze) with apt-get when missing. Exit 0 only if all pass.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
UNIT="$REPO/scripts/deploy/ssecast.service"
ENVF="$REPO/scripts/deploy/ssecast.env.example"
HEALTH="$REPO/scripts/deploy/healthcheck.sh"
BIN=${SSECAST_BIN:-$REPO/target/release/ssecast}

pass=0
fail=0
ok() { echo "ok - $*"; pass=$((pass + 1)); }
bad() { echo "FAIL - $*"; fail=$((fail + 1)); }

TMP=$(mktemp -d /tmp/ssecast-systemd-XXXXXX)
SSE_PID=
INSTANCE_PIDS=()  # the template's two instances (item 5)
cleanup() {
  if [ -n "$SSE_PID" ] && kill -0 "$SSE_PID" 2>/dev/null; then kill -KILL "$SSE_PID" 2>/dev/null; fi
  for p in "${INSTANCE_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT

[ -x "$BIN" ] || { echo "FAIL - ssecast binary not found at $BIN: run 'cargo build --release' first (or set SSECAST_BIN)"; echo "0 passed, 1 failed"; exit 1; }

pkgs=()
command -v systemd-analyze >/dev/null 2>&1 || pkgs+=(systemd)
command -v strace >/dev/null 2>&1 || pkgs+=(strace)
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "# missing: apt-get install ${pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >/dev/null
fi
STRACE=$(command -v strace || true)
[ -n "$STRACE" ] || { echo "FAIL - strace is not available and could not be installed (apt-get install strace)"; echo "0 passed, 1 failed"; exit 1; }
if ! command -v systemd-analyze >/dev/null 2>&1; then
  bad "systemd-analyze is not available and could not be installed (apt-get install systemd)"
  echo "$pass passed, $fail failed"
  exit 1
fi
echo "# $(systemd-analyze --version | head -1); PID 1 here is '$(ps -p 1 -o comm= 2>/dev/null || echo '?')' (verify runs offline with --root)"

# ---- scratch root for verify/security ----
exec_path=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$UNIT" | head -1)
ROOT="$TMP/root"
mkdir -p "$ROOT/etc/systemd/system" "$ROOT/etc/default" "$ROOT/usr/lib/systemd" "$ROOT$(dirname "$exec_path")"
for d in /usr/lib/systemd/system /lib/systemd/system; do
  if [ -d "$d" ]; then cp -a "$d" "$ROOT/usr/lib/systemd/"; break; fi
done
cp "$BIN" "$ROOT$exec_path"
cp "$UNIT" "$ROOT/etc/systemd/system/ssecast.service"
cp "$ENVF" "$ROOT/etc/default/ssecast"

verify() { # unit name inside $ROOT -> prints every message, returns nonzero if any
  local out rc
  out=$(systemd-analyze verify --root="$ROOT" --man=no --generators=no "/etc/systemd/system/$1" 2>&1)
  rc=$?
  printf '%s' "$out"
  [ $rc -eq 0 ] && [ -z "$out" ]
}

filter_verdict() { # "syscall names..." -> "ALLOWED n" or "DENIED names" against @system-service ~@privileged
  systemd-analyze syscall-filter 2>/dev/null | python3 -c '
import sys
groups, cur = {}, None
for line in sys.stdin.read().splitlines():
    if line.startswith("@"):
        cur = line.split()[0]; groups[cur] = []
    elif cur and line.strip() and not line.strip().startswith("#"):
        groups[cur].append(line.strip())
def expand(g, seen):
    out = set()
    for m in groups.get(g, []):
        if m.startswith("@"):
            if m not in seen:
                seen.add(m); out |= expand(m, seen)
        else:
            out.add(m)
    return out
allowed = expand("@system-service", set()) - expand("@privileged", set())
used = set(sys.argv[1].split())
bad = sorted(used - allowed)
print(("DENIED " + " ".join(bad)) if bad else ("ALLOWED %d" % len(used)))
' "$1"
}

if out=$(verify ssecast.service); then
  ok "systemd-analyze verify: ssecast.service has no errors or warnings"
else
  bad "systemd-analyze verify reported:"$'\n'"$out"
fi

# Negative control: the same check must catch a broken unit in this environment.
sed -e 's/^ProtectHome=yes/ProtectHome=bogus/' -e 's/^\[Service\]/[Service]\nNoSuchDirective=1/' "$UNIT" > "$ROOT/etc/systemd/system/broken.service"
if out=$(verify broken.service); then
  bad "negative control: a broken unit passed verify here, so the check above proves nothing"
else
  n=$(printf '%s\n' "$out" | grep -c . || true)
  ok "negative control: verify flags a broken copy ($n messages), so the check works here"
fi
rm -f "$ROOT/etc/systemd/system/broken.service"

# ---- sandbox exposure ----
sec=$(systemd-analyze security --offline=true --root="$ROOT" --threshold=20 ssecast.service 2>&1)
level=$(printf '%s\n' "$sec" | sed -n 's/.*Overall exposure level for ssecast.service: \([0-9.]*\).*/\1/p')
if [ -z "$level" ]; then
  bad "systemd-analyze security gave no exposure level:"$'\n'"$(printf '%s\n' "$sec" | tail -5)"
elif awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }'; then
  ok "systemd-analyze security --offline: exposure level $level (<= 2.0)"
else
  bad "systemd-analyze security: exposure level $level > 2.0"$'\n'"$(printf '%s\n' "$sec" | grep '✗' | head -20)"
fi

# ---- directives the deployment relies on ----
missing=()
for d in 'EnvironmentFile=-/etc/default/ssecast' 'Restart=on-failure' 'LimitNOFILE=1048576' 'DynamicUser=yes' \
         'ProtectSystem=strict' 'ProtectHome=yes' 'NoNewPrivileges=yes' 'PrivateTmp=yes' 'PrivateDevices=yes' \
         'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' 'SystemCallFilter=@system-service' \
         'MemoryDenyWriteExecute=yes' 'KillSignal=SIGTERM' 'CapabilityBoundingSet='; do
  grep -qxF "$d" "$UNIT" || missing+=("$d")
done
if [ ${#missing[@]} -eq 0 ]; then ok "unit has every required directive"; else bad "unit lacks: ${missing[*]}"; fi

to_seconds() { # systemd time span (20s, 1min 30s, 90) -> seconds
  local v=$1 total=0 n u
  [[ $v =~ ^[0-9]+$ ]] && { echo "$v"; return; }
  while [[ $v =~ ^[[:space:]]*([0-9]+)[[:space:]]*(min|ms|s|m|h)(.*)$ ]]; do
    n=${BASH_REMATCH[1]}; u=${BASH_REMATCH[2]}; v=${BASH_REMATCH[3]}
    case $u in ms) ;; s) total=$((total + n)) ;; m|min) total=$((total + 60 * n)) ;; h) total=$((total + 3600 * n)) ;; esac
  done
  echo "$total"
}
stop=$(to_seconds "$(sed -n 's/^TimeoutStopSec=//p' "$UNIT")")
grace=$(sed -n 's/^SSE_SHUTDOWN_GRACE=//p' "$ENVF"); grace=${grace:-10}
if awk -v s="$stop" -v g="$grace" 'BEGIN { exit !(s > g + 2) }'; then
  ok "TimeoutStopSec (${stop}s) is above SSE_SHUTDOWN_GRACE (${grace}s) with margin"
else
  bad "TimeoutStopSec (${stop}s) must exceed SSE_SHUTDOWN_GRACE (${grace}s) by more than 2 s"
fi

# ---- the env file drives the real binary, under the unit's privilege limits ----
env_args=()
while IFS= read -r line || [ -n "$line" ]; do
  line=${line#"${line%%[![:space:]]*}"}
  case "$line" in ''|'#'*|';'*) continue ;; esac
  if [[ ! $line =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; then bad "env file line is not VARIABLE=value: $line"; continue; fi
  key=${line%%=*}; val=${line#*=}
  if [[ $val =~ ^\"(.*)\"$ ]] || [[ $val =~ ^\'(.*)\'$ ]]; then val=${BASH_REMATCH[1]}; fi
  [ "$key" = SSE_BIND ] && val=127.0.0.1:0
  env_args+=("$key=$val")
done < "$ENVF"
echo "# environment from ssecast.env.example: ${env_args[*]}"

LOG="$TMP/ssecast.log"
: > "$LOG"
chmod 0755 "$TMP"
cp "$BIN" "$TMP/ssecast" && chmod 0755 "$TMP/ssecast"
runner=()
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  # nobody, no groups, no capabilities (also not inheritable/ambient), no_new_privs.
  runner=(setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all)
else
  echo "# not root or no setpriv: starting as $(id -un) without dropping privileges"
fi
prlimit_cmd=()
nofile=$(ulimit -Hn)
if command -v prlimit >/dev/null && prlimit --nofile=1048576:1048576 true 2>/dev/null; then
  prlimit_cmd=(prlimit --nofile=1048576:1048576)
  nofile=1048576
else
  echo "# cannot set RLIMIT_NOFILE to 1048576 here (no CAP_SYS_RESOURCE; hard limit $nofile): the cap is checked against $nofile instead"
fi
# Under strace, to compare every system call the hub makes with the unit's SystemCallFilter and
# every socket family with RestrictAddressFamilies.
mkdir -p "$TMP/trace.d" && chmod 0777 "$TMP/trace.d"
"${prlimit_cmd[@]}" "${runner[@]}" env -i PATH=/usr/bin:/bin "${env_args[@]}" \
  "$STRACE" -f -qq -o "$TMP/trace.d/trace" "$TMP/ssecast" > "$LOG" 2>&1 &
SSE_PID=$!  # strace's PID (prlimit, setpriv and env exec into it); the hub is its child
port=
for _ in $(seq 1 100); do
  port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$LOG" | head -1)
  [ -n "$port" ] && break
  kill -0 "$SSE_PID" 2>/dev/null || break
  sleep 0.05
done
if [ -z "$port" ]; then
  bad "ssecast did not start with the env file's variables:"$'\n'"$(cat "$LOG")"
else
  ok "ssecast starts from the env file's variables as an unprivileged user: $(grep -m1 -o 'listening on.*' "$LOG" | cut -c1-160)..."
  cap=$(sed -n 's/.*effective max_connections=\([0-9]*\).*/\1/p' "$LOG" | head -1)
  if [ -n "$cap" ] && [ "$cap" -eq $((nofile - 320)) ]; then
    ok "the default connection cap follows the open-file limit: $nofile - 320 = $cap"
  else
    bad "default connection cap '${cap}' is not the open-file limit $nofile - 320 (README: 'open-file limit − 320')"
  fi
  if h=$(SSE_BIND="127.0.0.1:$port" bash "$HEALTH"); then ok "healthcheck.sh: $h"; else bad "healthcheck.sh against the running hub: $h"; fi
  # Some of everything the hub does: a stream, publishes (JSON, text/plain), status, preflight, errors.
  if out=$(timeout 20 python3 - "$port" <<'PY' 2>&1
import json, socket, sys, time
port = int(sys.argv[1])
def req(raw):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(raw)
    data = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
    s.close()
    return data.split(b"\r\n", 1)[0].decode()
st = socket.create_connection(("127.0.0.1", port), timeout=5)
st.sendall(b"GET /events?channel=unit HTTP/1.1\r\nHost: x\r\n\r\n")
head = st.recv(4096)
assert head.startswith(b"HTTP/1.1 200"), head
body = json.dumps({"channel": "unit", "data": "hello"}).encode()
r1 = req(b"POST /events/broadcast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
r2 = req(b"POST /events/broadcast?channel=unit HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 5\r\n\r\nplain")
got = b""
deadline = time.time() + 3
while got.count(b"data: ") < 2 and time.time() < deadline:
    got += st.recv(65536)
assert b"data: hello" in got and b"data: plain" in got, got
r3 = req(b"GET /events/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
r4 = req(b"OPTIONS /events HTTP/1.1\r\nHost: x\r\nOrigin: http://a.example\r\nConnection: close\r\n\r\n")
r5 = req(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
st.close()
print(r1, "|", r2, "|", r3, "|", r4, "|", r5)
PY
  ); then
    ok "stream, publishes, status, preflight and a 404 work under these limits ($out)"
  else
    bad "workload against the hub failed: $out"
  fi
  hub_pid=$(ps -o pid= --ppid "$SSE_PID" | head -1 | tr -d ' ')
  t0=$(date +%s%N)
  kill -TERM "${hub_pid:-$SSE_PID}"
  code=
  for _ in $(seq 1 $(( (grace + 5) * 20 ))); do
    if ! kill -0 "$SSE_PID" 2>/dev/null; then wait "$SSE_PID"; code=$?; break; fi
    sleep 0.05
  done
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  if [ -z "$code" ]; then
    bad "ssecast still running $((grace + 5)) s after SIGTERM"
    kill -KILL "$SSE_PID" 2>/dev/null
  elif [ "$code" -eq 0 ]; then
    ok "SIGTERM: exit code 0 after ${ms} ms (TimeoutStopSec would allow ${stop}s)"
  else
    bad "SIGTERM: exit code $code after ${ms} ms:"$'\n'"$(tail -5 "$LOG")"
  fi
  SSE_PID=

  # ---- what the hub did vs. what the unit allows ----
  used=$(sed -E 's/^[0-9]+ +//' "$TMP/trace.d/trace" | grep -oE '^[a-z_0-9]+\(' | tr -d '(' | sort -u | tr '\n' ' ')
  families=$(grep -oE 'socket(pair)?\(AF_[A-Z0-9]+' "$TMP/trace.d/trace" | sed 's/.*(//' | sort -u | tr '\n' ' ')
  verdict=$(filter_verdict "$used")
  if [ -z "$used" ]; then
    bad "strace recorded no system calls (trace: $(head -3 "$TMP/trace.d/trace" 2>&1))"
  elif [[ $verdict == ALLOWED* ]]; then
    ok "all ${verdict#ALLOWED } system calls the hub made are in SystemCallFilter=@system-service ~@privileged"
  else
    bad "system calls outside the unit's SystemCallFilter (the hub would get EPERM): ${verdict#DENIED }"
  fi
  extra=$(printf '%s\n' $families | grep -vxE 'AF_INET|AF_INET6|AF_UNIX' || true)
  if [ -n "$families" ] && [ -z "$extra" ]; then
    ok "socket families used ($families) are within RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX"
  else
    bad "socket families used: '${families}', outside RestrictAddressFamilies: ${extra}"
  fi
fi

# ---- the template unit: one instance per core on one shared port ----
TPL="$REPO/scripts/deploy/ssecast@.service"
if [ ! -f "$TPL" ]; then
  bad "scripts/deploy/ssecast@.service is missing"
else
  cp "$TPL" "$ROOT/etc/systemd/system/ssecast@.service"
  if out=$(verify ssecast@0.service); then
    ok "systemd-analyze verify: ssecast@0.service (the template's instance 0) has no errors or warnings"
  else
    bad "systemd-analyze verify ssecast@0.service reported:"$'\n'"$out"
  fi
  if out=$(verify ssecast@x.service); then
    bad "verify accepted ssecast@x.service: CPUAffinity=%i does not see the instance name"
  else
    ok "verify flags ssecast@x.service ($(printf '%s' "$out" | grep -o "Failed to parse CPU affinity[^,]*" | head -1)): %i reaches CPUAffinity="
  fi
  sec=$(systemd-analyze security --offline=true --root="$ROOT" --threshold=20 ssecast@0.service 2>&1)
  level=$(printf '%s\n' "$sec" | sed -n 's/.*Overall exposure level for ssecast@0.service: \([0-9.]*\).*/\1/p')
  if [ -n "$level" ] && awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }'; then
    ok "systemd-analyze security --offline: ssecast@0.service exposure level $level (<= 2.0)"
  else
    bad "systemd-analyze security ssecast@0.service: exposure '${level}'"$'\n'"$(printf '%s\n' "$sec" | tail -5)"
  fi
  # The same hardening: every directive of the plain unit's sandbox block, and the lifecycle ones.
  missing=()
  while IFS= read -r d; do
    grep -qxF "$d" "$TPL" || missing+=("$d")
  done < <(sed -n '/^# --- sandbox/,/^\[Install\]/p' "$UNIT" | grep -E '^[A-Za-z]+=' ;
           grep -E '^(EnvironmentFile|ExecStart|Restart|RestartSec|RestartPreventExitStatus|LimitNOFILE|KillSignal|TimeoutStopSec|KillMode|Type)=' "$UNIT")
  for d in 'Environment=SSE_REUSE_PORT=true' 'CPUAffinity=%i' 'User=ssecast' 'Group=ssecast' 'WantedBy=multi-user.target'; do
    grep -qxF "$d" "$TPL" || missing+=("$d")
  done
  admin_tpl=$(sed -n 's/^Environment=SSE_ADMIN_BIND=//p' "$TPL" | head -1)
  [[ $admin_tpl == *%i* ]] || missing+=("Environment=SSE_ADMIN_BIND=<address with %i>")
  if [ ${#missing[@]} -eq 0 ]; then
    ok "template has the plain unit's sandbox and lifecycle directives, SSE_REUSE_PORT=true, CPUAffinity=%i, one User=, admin address $admin_tpl"
  else
    bad "template lacks: ${missing[*]}"
  fi
  # EnvironmentFile= wins over Environment=: the shared file must leave the per-instance settings alone.
  if grep -qE '^[[:space:]]*(SSE_REUSE_PORT|SSE_ADMIN_BIND)=' "$ENVF"; then
    bad "ssecast.env.example sets SSE_REUSE_PORT or SSE_ADMIN_BIND, which would override the template's per-instance values"
  else
    ok "ssecast.env.example leaves SSE_REUSE_PORT and SSE_ADMIN_BIND to the template"
  fi

  # Two instances, started with the environment the template gives them.
  free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("0.0.0.0", 0)); print(s.getsockname()[1])'; }
  shared=$(free_port); admin_port=$(free_port)
  tpl_env=()
  while IFS= read -r line; do tpl_env+=("$line"); done < <(sed -n 's/^Environment=//p' "$TPL")
  pins=()
  command -v taskset >/dev/null || bad "taskset (util-linux) missing: cannot pin as CPUAffinity=%i does"
  ncpu=$(nproc)
  declare -a inst_pid inst_log inst_admin
  for i in 0 1; do
    env_i=()
    for kv in "${tpl_env[@]}"; do
      kv=${kv//%i/$i}
      [[ $kv == SSE_ADMIN_BIND=* ]] && kv="${kv%:*}:$admin_port"
      env_i+=("$kv")
    done
    # EnvironmentFile= after Environment=: the file's values win, as in systemd.
    for kv in "${env_args[@]}"; do
      [[ $kv == SSE_BIND=* ]] && kv="SSE_BIND=127.0.0.1:$shared"
      env_i+=("$kv")
    done
    inst_admin[$i]=$(printf '%s\n' "${env_i[@]}" | sed -n 's/^SSE_ADMIN_BIND=//p' | tail -1)
    pins=()
    if command -v taskset >/dev/null && [ "$i" -lt "$ncpu" ]; then pins=(taskset -c "$i"); fi
    trace=()
    [ "$i" = 0 ] && trace=("$STRACE" -f -qq -o "$TMP/trace.d/instance0")
    inst_log[$i]="$TMP/instance$i.log"
    "${prlimit_cmd[@]}" "${runner[@]}" env -i PATH=/usr/bin:/bin "${env_i[@]}" \
      "${pins[@]}" "${trace[@]}" "$TMP/ssecast" > "${inst_log[$i]}" 2>&1 &
    inst_pid[$i]=$!
    INSTANCE_PIDS+=("$!")
  done
  echo "# instance environment (1): $(printf '%s ' "${env_i[@]}")"
  up=0
  for _ in $(seq 1 100); do
    up=0
    for i in 0 1; do grep -q "listening on 127.0.0.1:$shared" "${inst_log[$i]}" && up=$((up + 1)); done
    [ "$up" -eq 2 ] && break
    sleep 0.05
  done
  if [ "$up" -ne 2 ]; then
    bad "two instances did not both start on 127.0.0.1:$shared:"$'\n'"$(cat "${inst_log[0]}" "${inst_log[1]}")"
  else
    ok "instances 0 and 1 listen on the shared 127.0.0.1:$shared, admin ${inst_admin[0]} and ${inst_admin[1]}"
    pinned=()
    for i in 0 1; do
      hub=${inst_pid[$i]}
      [ "$i" = 0 ] && hub=$(ps -o pid= --ppid "${inst_pid[0]}" | head -1 | tr -d ' ')
      pinned+=("$i:$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' "/proc/$hub/status" 2>/dev/null)")
    done
    if [ "$ncpu" -ge 2 ] && [ "${pinned[*]}" = "0:0 1:1" ]; then
      ok "each instance runs on its own CPU (instance:cpus ${pinned[*]})"
    elif [ "$ncpu" -lt 2 ]; then
      echo "# one CPU here: instance 1 is not pinned (instance:cpus ${pinned[*]})"
    else
      bad "instances are not pinned as CPUAffinity=%i would: ${pinned[*]}"
    fi
    if out=$(timeout 20 python3 - "$shared" "${inst_admin[0]}" "${inst_admin[1]}" <<'PY' 2>&1
import json, socket, sys, time
shared = int(sys.argv[1])
admins = [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in sys.argv[2:]]
def get(addr, path):
    s = socket.create_connection(addr, timeout=5)
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
    data = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body
streams = []
for _ in range(40):
    st = socket.create_connection(("127.0.0.1", shared), timeout=5)
    st.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    assert st.recv(4096).startswith(b"HTTP/1.1 200"), "stream refused"
    streams.append(st)
deadline = time.time() + 5
while True:
    active = [json.loads(get(a, "/events/status")[1])["connections"]["active"] for a in admins]
    if sum(active) == 40 or time.time() > deadline:
        break
    time.sleep(0.05)
assert sum(active) == 40 and min(active) > 0, "streams per instance: %s" % active
code, body = get(admins[0], "/events")
assert code == 404 and b"admin address" in body, (code, body)
for st in streams:
    st.close()
print("streams per instance %s, admin /events -> %d" % (active, code))
PY
    ); then
      ok "40 streams on the shared port reach both instances ($out)"
    else
      bad "shared-port workload failed: $out"
    fi
    # A process of another user cannot join the port: the kernel shares it within one UID.
    if [ ${#runner[@]} -gt 0 ]; then
      other=$(env -i PATH=/usr/bin:/bin SSE_BIND="127.0.0.1:$shared" SSE_REUSE_PORT=true timeout 10 "$TMP/ssecast" 2>&1)
      code=$?
      if [ "$code" -eq 1 ] && grep -q "one UID" <<<"$other"; then
        ok "a --reuse-port process of another user (uid $(id -u)) is refused: exit 1, $(grep -m1 -o 'cannot listen.*' <<<"$other" | cut -c1-150)..."
      else
        bad "a process of another user on the shared port: exit $code, $other"
      fi
    else
      echo "# not root: the other-user check needs a second user; skipped"
    fi
  fi
  for i in 0 1; do
    hub=${inst_pid[$i]}
    [ "$i" = 0 ] && hub=$(ps -o pid= --ppid "${inst_pid[0]}" | head -1 | tr -d ' ')
    kill -TERM "${hub:-${inst_pid[$i]}}" 2>/dev/null
  done
  for i in 0 1; do
    code=
    for _ in $(seq 1 $(( (grace + 5) * 20 ))); do
      if ! kill -0 "${inst_pid[$i]}" 2>/dev/null; then wait "${inst_pid[$i]}"; code=$?; break; fi
      sleep 0.05
    done
    if [ "$code" = 0 ]; then
      ok "instance $i: exit code 0 on SIGTERM"
    else
      bad "instance $i: exit '${code}' after SIGTERM:"$'\n'"$(tail -5 "${inst_log[$i]}")"
      kill -KILL "${inst_pid[$i]}" 2>/dev/null
    fi
  done
  used=$(sed -E 's/^[0-9]+ +//' "$TMP/trace.d/instance0" 2>/dev/null | grep -oE '^[a-z_0-9]+\(' | tr -d '(' | sort -u | tr '\n' ' ')
  verdict=$(filter_verdict "$used")
  if [ -z "$used" ]; then
    bad "strace recorded no system calls for instance 0"
  elif [[ $verdict == ALLOWED* ]]; then
    ok "instance 0 (SO_REUSEPORT, admin listener): all ${verdict#ALLOWED } system calls are in the unit's SystemCallFilter"
  else
    bad "instance 0 made system calls outside SystemCallFilter: ${verdict#DENIED }"
  fi
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
