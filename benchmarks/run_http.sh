#!/usr/bin/env bash
# HTTP plaintext macro-benchmark: cowq's examples/http_server against nginx
# (Debian's nginx-light, one worker process), both loaded by wrk.
#
#   benchmarks/run_http.sh
#
# Builds http_server (release, in build-http), installs wrk and nginx-light
# if missing (without starting Debian's nginx service: this script runs
# its own nginx, from a configuration in a temporary directory), then for
# each configuration runs both servers interleaved within each repetition
# (cowq, nginx, then nginx, cowq, ...), each a fresh process on CPU 0
# (taskset -c 0; http_server also --cpus 0; nginx is a master and one
# worker) and wrk on CPU 1 (taskset -c 1 wrk -t1). Everything listens on
# 127.0.0.1 only. Every run first checks the server's answer with one
# request, warms up, then measures: requests/s as wrk reports them, and the
# server's CPU time (utime+stime from /proc/PID/stat, nginx's master and
# worker together) over wrk's measured run, per request.
#
# The answer is the TechEmpower plaintext one: 200, "Hello, World!",
# Content-Type text/plain, Date, Server. nginx: `return 200 "Hello, World!"`
# with default_type text/plain, access_log off, keepalive_requests raised
# so that neither server closes wrk's keep-alive connections mid-run.
#
# Environment (defaults in brackets):
#   HTTP_BUILD        build directory [<repo>/build-http]
#   HTTP_DURATION     measured seconds per run [5]
#   HTTP_WARMUP       warm-up seconds per run [1]
#   HTTP_REPS         repetitions per configuration [5]
#   HTTP_CONFIGS      "CONNS:PIPELINE ..." [64:1 256:1 256:16]; PIPELINE > 1
#                     has wrk send that many requests per write
#                     (pipelining, as TechEmpower's plaintext test does)
#   HTTP_SERVERS      servers in the first repetition's order, reversed in
#                     every other one ["cowq nginx"]; "cowq-tick" is cowq
#                     with --watchdog-tick-us HTTP_TICK_US [2000] (cowq's
#                     default tick is 500 us: what the watchdog costs)
#   HTTP_NICE         nice value for servers and wrk [-10; 0 to leave alone]
#   HTTP_QUIET_BUSY   wait before a repetition while other processes keep
#                     more than this many CPUs busy [0.3]
#   HTTP_QUIET_WAIT   ... but at most this many seconds per wait [20]
#   HTTP_QUIET_BUDGET ... and this many in all [240]
#   HTTP_TIME_LIMIT   no run starts after this many seconds; the summary
#                     covers what ran [2400]
#   HTTP_STOP_TIMEOUT seconds a server gets to exit after SIGTERM [5]
#   HTTP_OUT          directory for runs.jsonl, logs and summary.md
#                     [<build>/http-results-<timestamp>]
#
# With the defaults a run takes about 8-10 minutes (plus the build).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${HTTP_BUILD:-$root/build-http}
duration=${HTTP_DURATION:-5}
warmup=${HTTP_WARMUP:-1}
reps=${HTTP_REPS:-5}
configs=${HTTP_CONFIGS:-"64:1 256:1 256:16"}
servers=${HTTP_SERVERS:-"cowq nginx"}
tick_us=${HTTP_TICK_US:-2000}
nice_val=${HTTP_NICE:--10}
quiet_busy=${HTTP_QUIET_BUSY:-0.3}
quiet_wait=${HTTP_QUIET_WAIT:-20}
quiet_budget=${HTTP_QUIET_BUDGET:-240}
time_limit=${HTTP_TIME_LIMIT:-2400}
stop_timeout=${HTTP_STOP_TIMEOUT:-5}
out=${HTTP_OUT:-$build/http-results-$(date +%Y%m%d-%H%M%S)}

tmp=$(mktemp -d /tmp/cowq-http-bench.XXXXXX)
server_pid=""
made_policy=0
cleanup() {
  # Only the processes this script started, by pid.
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  if ((made_policy == 1)); then rm -f /usr/sbin/policy-rc.d; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# --- packages --------------------------------------------------------------
missing=()
for p in wrk nginx-light; do
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true) == installed ]] || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "run_http.sh: needs ${missing[*]} (apt-get install --no-install-recommends ${missing[*]}, as root)" >&2
    exit 1
  fi
  # The nginx packages start the nginx service on installation; this
  # benchmark wants no system nginx, only its own: a policy-rc.d that
  # refuses service starts, for the length of the installation.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt_opts=(-o DPkg::Lock::Timeout=300)
  DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update
  DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}"
  if ((made_policy == 1)); then rm -f /usr/sbin/policy-rc.d; made_policy=0; fi
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

# --- build -----------------------------------------------------------------
if [[ ! -f $build/build.ninja ]]; then
  meson setup "$build" "$root" --buildtype=release -Dtests=disabled -Dbenchmarks=disabled
elif [[ $(meson introspect "$build" --buildoptions | python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="buildtype"))') != release ]]; then
  meson configure "$build" --buildtype=release
fi
ninja -C "$build" examples/http_server

mkdir -p "$out"
runs=$out/runs.jsonl
: > "$runs"

prio=()
if [[ $nice_val != 0 ]]; then prio=(nice -n "$nice_val"); fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet -- lib include examples 2>/dev/null || echo ' (+ uncommitted changes in lib/include/examples)')"
  echo "kernel: $(uname -r)"
  echo "cpus: $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'))"
  echo "nginx: $("$nginx_bin" -v 2>&1 | sed 's/^nginx version: //'); wrk: $(wrk --version 2>&1 | head -1 | cut -d' ' -f2)"
  echo "duration ${duration}s, warm-up ${warmup}s, reps $reps, nice $nice_val, configs $configs"
} | tee "$out/meta.txt"

# --- helpers ---------------------------------------------------------------
quiet_pause=1
# shellcheck source=quiet.sh
source "$root/benchmarks/quiet.sh"

# wrk script for pipelining: PIPELINE requests of "/" in one write.
cat > "$tmp/pipeline.lua" <<'EOF'
init = function(args)
  local depth = tonumber(args[1]) or 1
  local r = {}
  for i = 1, depth do r[i] = wrk.format(nil, "/") end
  req = table.concat(r)
end
request = function() return req end
EOF

# Runs wrk and measures around it: the server's CPU time (utime+stime of
# the given pids), wrk's own CPU time (its rusage), and the CPU everything
# else used (/proc/stat), over wrk's run. Prints one JSON object.
cat > "$tmp/measure.py" <<'EOF'
import json, os, re, subprocess, sys, time

pids = [int(p) for p in sys.argv[1].split(",")]
cmd = sys.argv[2:]
tick = os.sysconf("SC_CLK_TCK")

def proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])  # utime, stime (fields 14, 15)

def busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)  # busy, total (idle and iowait excluded)

c0 = sum(proc_cpu(p) for p in pids)
b0, _ = busy_ticks()
t0 = time.monotonic()
p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
text = p.stdout.read()
_, status, ru = os.wait4(p.pid, 0)
t1 = time.monotonic()
c1 = sum(proc_cpu(p) for p in pids)
b1, _ = busy_ticks()

def num(pattern, default=0.0):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else default

def latency_us(label):
    m = re.search(r"^\s*%s%%\s+([\d.]+)(us|ms|s)\s*$" % label, text, re.M)
    if not m:
        return -1.0
    return float(m.group(1)) * {"us": 1.0, "ms": 1e3, "s": 1e6}[m.group(2)]

requests = int(num(r"(\d+) requests in"))
window = t1 - t0
server_s = (c1 - c0) / tick
wrk_s = ru.ru_utime + ru.ru_stime
errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
r = {
    "requests": requests,
    "req_per_s": num(r"Requests/sec:\s+([\d.]+)"),
    "server_cpu_s": server_s,
    "server_cpu_us_per_req": server_s * 1e6 / requests if requests else -1,
    "server_cpu_pct": 100 * server_s / window,
    "wrk_cpu_pct": 100 * wrk_s / window,
    "other_cpu_pct": 100 * ((b1 - b0) / tick - server_s - wrk_s) / window,
    "p50_us": latency_us("50"),
    "p99_us": latency_us("99"),
    "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
    "non_2xx": int(num(r"Non-2xx or 3xx responses: (\d+)")),
    "wrk_rc": os.waitstatus_to_exitcode(status),
    "window_s": window,
}
print(json.dumps(r))
if r["wrk_rc"] != 0 or requests == 0:
    sys.stderr.write(text)
EOF

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Checks one answer: 200 and the plaintext body.
check_answer() {  # name port
  local body
  body=$(curl -sS --max-time 10 "http://127.0.0.1:$2/") || { echo "$1: no answer on port $2" >&2; return 1; }
  if [[ $body != "Hello, World!" ]]; then echo "$1: wrong answer: $body" >&2; return 1; fi
}

start_server() {  # name -> server_pid, server_port, cpu_pids
  local name=$1 log=$out/server-$1.log i
  : > "$log"
  case $name in
    cowq | cowq-tick)
      local extra=()
      if [[ $name == cowq-tick ]]; then extra=(--watchdog-tick-us "$tick_us"); fi
      # taskset and nice exec the server: $! is the server's pid.
      taskset -c 0 "${prio[@]}" "$build/examples/http_server" --port 0 --cpus 0 --address 127.0.0.1 "${extra[@]}" \
        > "$log" 2>&1 &
      server_pid=$!
      server_port=""
      for i in $(seq 200); do
        server_port=$(sed -n 's/^listening on [0-9.]*:\([0-9]*\).*/\1/p' "$log")
        [[ -n $server_port ]] && break
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
      done
      ;;
    nginx)
      server_port=$(free_port)
      mkdir -p "$tmp/nginx"
      cat > "$tmp/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events {
  worker_connections 4096;
}
http {
  access_log off;
  keepalive_requests 1000000000;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  server {
    listen 127.0.0.1:$server_port;
    location = / {
      default_type text/plain;
      return 200 "Hello, World!";
    }
  }
}
EOF
      taskset -c 0 "${prio[@]}" "$nginx_bin" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" > "$log" 2>&1 &
      server_pid=$!
      for i in $(seq 200); do
        curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$server_port/" && break
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
      done
      ;;
    *) echo "unknown server $name" >&2; exit 2 ;;
  esac
  if [[ -z $server_port ]] || ! kill -0 "$server_pid" 2>/dev/null || ! check_answer "$name" "$server_port"; then
    echo "server $name did not start:" >&2
    cat "$log" >&2
    [[ -f $tmp/nginx/error.log ]] && cat "$tmp/nginx/error.log" >&2
    exit 1
  fi
  cpu_pids=$server_pid
  if [[ $name == nginx ]]; then
    local children
    children=$(cat /proc/"$server_pid"/task/*/children 2>/dev/null | tr -s ' \n' ',' | sed 's/,$//')
    [[ -n $children ]] && cpu_pids="$server_pid,$children"
  fi
}

stop_server() {  # -> stop_ok
  local i
  kill -TERM "$server_pid" 2>/dev/null || true
  stop_ok=0
  for i in $(seq $((stop_timeout * 20))); do
    if ! kill -0 "$server_pid" 2>/dev/null; then stop_ok=1; break; fi
    sleep 0.05
  done
  if ((stop_ok == 0)); then
    echo "  !! $1 (pid $server_pid) still running ${stop_timeout}s after SIGTERM" >&2
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

failures=0
run_one() {  # server conns pipeline rep
  local name=$1 conns=$2 depth=$3 rep=$4 json rc=0
  local wrk_cmd=(taskset -c 1 "${prio[@]}" timeout $((duration + warmup + 60)) wrk -t1 -c"$conns" --latency)
  local script_args=()
  if ((depth > 1)); then
    wrk_cmd+=(-s "$tmp/pipeline.lua")
    script_args=(-- "$depth")
  fi
  start_server "$name"
  local url=http://127.0.0.1:$server_port/
  if ((warmup > 0)); then
    "${wrk_cmd[@]}" -d"${warmup}s" "$url" "${script_args[@]}" > /dev/null 2>&1 || true
  fi
  json=$(python3 "$tmp/measure.py" "$cpu_pids" "${wrk_cmd[@]}" -d"${duration}s" "$url" "${script_args[@]}" \
           2> "$out/wrk.err") || rc=$?
  check_answer "$name" "$server_port" || rc=1
  stop_server "$name"
  if ((rc != 0)) || [[ -z $json ]]; then
    echo "  !! measuring $name failed ($conns conns, pipeline $depth): $(cat "$out/wrk.err")" >&2
    failures=$((failures + 1))
    [[ -z $json ]] && json='{"requests":0}'
  fi
  if ((stop_ok == 0)); then failures=$((failures + 1)); fi
  echo "${json%\}},\"server\":\"$name\",\"conns\":$conns,\"pipeline\":$depth,\"rep\":$rep,\"pre_busy_cpus\":$pre_busy,\"loadavg\":\"$pre_load\",\"stopped_on_sigterm\":$stop_ok}" >> "$runs"
  python3 -c '
import json, sys
r = json.loads(sys.argv[1])
print("  %-5s %9.0f req/s  cpu %6.3f us/req (%5.1f%%)  p50 %8.1f us  p99 %8.1f us  wrk %5.1f%%  other %5.1f%%  errors %d/%d" % (
    r["server"], r.get("req_per_s", 0), r.get("server_cpu_us_per_req", -1), r.get("server_cpu_pct", 0),
    r.get("p50_us", 0), r.get("p99_us", 0), r.get("wrk_cpu_pct", 0), r.get("other_cpu_pct", -1),
    r.get("socket_errors", 0), r.get("non_2xx", 0)))' "$(tail -1 "$runs")"
}

# --- runs --------------------------------------------------------------------
start=$SECONDS
stopped_early=0
read -r -a order <<< "$servers"
for cfg in $configs; do
  IFS=: read -r conns depth <<< "$cfg"
  echo "== $conns connections, pipeline $depth"
  for rep in $(seq "$reps"); do
    if ((SECONDS - start > time_limit)); then stopped_early=1; break 2; fi
    wait_quiet
    echo "  [load] busy CPUs before: $pre_busy, loadavg: $pre_load (waited ${quiet_waited}s)"
    this=("${order[@]}")
    if ((rep % 2 == 0)); then
      this=()
      for ((i = ${#order[@]} - 1; i >= 0; i--)); do this+=("${order[i]}"); done
    fi
    for s in "${this[@]}"; do run_one "$s" "$conns" "$depth" "$rep"; done
  done
done
if ((stopped_early == 1)); then
  echo "!! HTTP_TIME_LIMIT (${time_limit}s) reached: later runs skipped" | tee -a "$out/meta.txt" >&2
fi

# --- summary -----------------------------------------------------------------
python3 - "$runs" "$out/summary.md" <<'EOF'
import json, statistics, sys
from collections import defaultdict

runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = defaultdict(lambda: defaultdict(list))   # (conns, pipeline) -> server -> [run]
for r in runs:
    by[(r["conns"], r["pipeline"])][r["server"]].append(r)

def med(xs):
    return statistics.median(xs) if xs else float("nan")

def field(rs, k):
    return [r[k] for r in rs if r.get(k) is not None and r.get(k, -1) >= 0 and r.get("requests", 0) > 0]

def paired(a, b, k):
    # Per repetition (the two servers ran back to back), then the median.
    da = {r["rep"]: r.get(k, -1) for r in a if r.get("requests", 0) > 0}
    db = {r["rep"]: r.get(k, -1) for r in b if r.get("requests", 0) > 0}
    return [da[i] / db[i] for i in da if i in db and db[i] > 0 and da[i] > 0]

def fmt_ratio(xs):
    return "%.2f (%.2f-%.2f)" % (med(xs), min(xs), max(xs)) if xs else "n/a"

def lat(rs, k):
    xs = [x for x in field(rs, k) if x > 0]
    return "%.0f" % med(xs) if xs else "n/a"

servers = []
for r in runs:
    if r["server"] not in servers:
        servers.append(r["server"])
L = []
P = L.append
P("Medians over repetitions; ratios are medians of per-repetition ratios against nginx"
  " (min-max in brackets); CPU is the server's utime+stime over wrk's run, per request.")
P("")
P("| conns | pipeline | server | req/s | req/s vs nginx | CPU us/req | CPU/req nginx/this | p50 us | p99 us |")
P("|---:|---:|---|---:|---|---:|---|---:|---:|")
for k in sorted(by):
    g = by[k]
    n = g.get("nginx", [])
    for s in servers:
        rs = g.get(s, [])
        if not rs:
            continue
        vs = "" if s == "nginx" else fmt_ratio(paired(rs, n, "req_per_s"))
        cpu = "" if s == "nginx" else fmt_ratio(paired(n, rs, "server_cpu_us_per_req"))
        P("| %d | %d | %s | %.0f | %s | %.2f | %s | %s | %s |" % (
            k[0], k[1], s, med(field(rs, "req_per_s")), vs, med(field(rs, "server_cpu_us_per_req")), cpu,
            lat(rs, "p50_us"), lat(rs, "p99_us")))
P("")
P("Spread and conditions (medians: server CPU and wrk CPU in % of one CPU, CPU used by everything"
  " else during the window):")
P("")
P("| conns | pipeline | server | req/s min-max | CPU us/req min-max | server CPU % | wrk CPU % | other CPU % | runs | SIGTERM exits | socket errors | non-2xx |")
P("|---:|---:|---|---|---|---:|---:|---:|---:|---|---:|---:|")
for k in sorted(by):
    for s in servers:
        rs = by[k].get(s, [])
        if not rs:
            continue
        q = field(rs, "req_per_s"); u = field(rs, "server_cpu_us_per_req")
        P("| %d | %d | %s | %.0f-%.0f | %.2f-%.2f | %.0f | %.0f | %.0f | %d | %d/%d | %d | %d |" % (
            k[0], k[1], s, min(q or [0]), max(q or [0]), min(u or [0]), max(u or [0]),
            med(field(rs, "server_cpu_pct")), med(field(rs, "wrk_cpu_pct")),
            med([r["other_cpu_pct"] for r in rs if "other_cpu_pct" in r]), len(rs),
            sum(r.get("stopped_on_sigterm", 0) for r in rs), len(rs),
            sum(r.get("socket_errors", 0) for r in rs), sum(r.get("non_2xx", 0) for r in rs)))
text = "\n".join(L) + "\n"
open(sys.argv[2], "w").write(text)
print(text)
EOF
echo "runs: $runs"
echo "summary: $out/summary.md"
if ((failures > 0)); then
  echo "$failures failure(s): see above" >&2
  exit 1
fi
