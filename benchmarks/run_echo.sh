#!/usr/bin/env bash
# TCP echo macro-benchmark: cowq's examples/echo_server against a raw
# liburing loop (the machine's limit) and an Asio C++20-coroutine server.
#
#   benchmarks/run_echo.sh
#
# Builds (release, in build-echo), then for each configuration runs the
# three servers interleaved within each repetition (raw, cowq, asio, raw,
# cowq, asio, ...), each a fresh process on CPU 0 (taskset -c 0, plus the
# server's own pinning option), with the load driver (echo_load) on CPU 1.
# Everything listens on 127.0.0.1 only. The driver verifies every echoed
# byte and reads the server's CPU time (utime+stime, /proc/PID/stat) over
# its measured window, giving server CPU microseconds per message.
#
# Environment (defaults in brackets):
#   ECHO_BUILD        build directory [<repo>/build-echo]
#   ECHO_DURATION     measured seconds per run [3]
#   ECHO_WARMUP       warm-up seconds per run [1]
#   ECHO_REPS         repetitions per configuration [5]
#   ECHO_CONFIGS      "CONNS:SIZE:DEPTH ..." [the 8 of {64,256}x{64,4096}x{1,16}, then 1:64:1]
#   ECHO_SERVERS      order within a repetition ["raw cowq asio"]; cowq-shared
#                     adds echo_server --recv shared (a net::receiver) to the
#                     spread table
#   ECHO_NICE         nice value for servers and driver [-10; 0 to leave alone]
#   ECHO_QUIET_BUSY   wait before a repetition while other processes keep
#                     more than this many CPUs busy [0.3]
#   ECHO_QUIET_WAIT   ... but at most this many seconds per wait [20]
#   ECHO_QUIET_BUDGET ... and this many in all [240]
#   ECHO_STOP_TIMEOUT seconds a server gets to exit after SIGTERM [5]
#   ECHO_STRICT       1: a server that does not exit on SIGTERM, or a driver
#                     error (wrong bytes, lost connection, stall), stops the
#                     run with exit status 1; 0: record it and go on [1]
#   ECHO_OUT          directory for runs.jsonl, logs and summary.md
#                     [<build>/echo-results-<timestamp>]
#
# With the defaults the whole run takes about 12-16 minutes.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${ECHO_BUILD:-$root/build-echo}
duration=${ECHO_DURATION:-3}
warmup=${ECHO_WARMUP:-1}
reps=${ECHO_REPS:-5}
configs=${ECHO_CONFIGS:-"64:64:1 64:64:16 64:4096:1 64:4096:16 256:64:1 256:64:16 256:4096:1 256:4096:16 1:64:1"}
servers=${ECHO_SERVERS:-"raw cowq asio"}
nice_val=${ECHO_NICE:--10}
quiet_busy=${ECHO_QUIET_BUSY:-0.3}
quiet_wait=${ECHO_QUIET_WAIT:-20}
quiet_budget=${ECHO_QUIET_BUDGET:-240}
stop_timeout=${ECHO_STOP_TIMEOUT:-5}
strict=${ECHO_STRICT:-1}
out=${ECHO_OUT:-$build/echo-results-$(date +%Y%m%d-%H%M%S)}

server_pid=""
driver_pid=""
cleanup() {
  # Only the processes this script started, by pid.
  if [[ -n $driver_pid ]] && kill -0 "$driver_pid" 2>/dev/null; then kill -KILL "$driver_pid" 2>/dev/null || true; fi
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# --- build -----------------------------------------------------------------
if [[ ! -f $build/build.ninja ]]; then
  meson setup "$build" "$root" --buildtype=release -Dtests=disabled
elif [[ $(meson introspect "$build" --buildoptions | python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="buildtype"))') != release ]]; then
  meson configure "$build" --buildtype=release
fi
ninja -C "$build" examples/echo_server benchmarks/echo_load benchmarks/echo_raw_uring benchmarks/echo_asio

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
  echo "duration ${duration}s, warm-up ${warmup}s, reps $reps, nice $nice_val"
} | tee "$out/meta.txt"

# --- helpers -----------------------------------------------------------------
quiet_pause=1
# shellcheck source=quiet.sh
source "$root/benchmarks/quiet.sh"

start_server() {  # name -> server_pid, server_port
  local name=$1 log=$out/server-$1.log
  local cmd
  case $name in
    raw) cmd=("$build/benchmarks/echo_raw_uring" --port 0 --cpu 0 --address 127.0.0.1) ;;
    cowq) cmd=("$build/examples/echo_server" --port 0 --cpus 0 --address 127.0.0.1) ;;
    cowq-shared) cmd=("$build/examples/echo_server" --port 0 --cpus 0 --address 127.0.0.1 --recv shared) ;;
    asio) cmd=("$build/benchmarks/echo_asio" --port 0 --cpu 0 --address 127.0.0.1) ;;
    *) echo "unknown server $name" >&2; exit 2 ;;
  esac
  # Emptied here, not by the redirection below: that runs in the forked
  # child, and until it does the loop below could read the previous run's
  # "listening on" line (a stale port: connection refused).
  : > "$log"
  # taskset and nice exec the server: $! is the server's pid.
  taskset -c 0 "${prio[@]}" "${cmd[@]}" > "$log" 2>&1 &
  server_pid=$!
  server_port=""
  local i
  for i in $(seq 100); do
    server_port=$(sed -n 's/^listening on [0-9.]*:\([0-9]*\).*/\1/p' "$log")
    [[ -n $server_port ]] && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "server $name did not start:" >&2
  cat "$log" >&2
  exit 1
}

# -> stop_ok (1: exited within the timeout after SIGTERM)
stop_server() {
  local name=$1 i
  kill -TERM "$server_pid" 2>/dev/null || true
  stop_ok=0
  for i in $(seq $((stop_timeout * 20))); do
    if ! kill -0 "$server_pid" 2>/dev/null; then stop_ok=1; break; fi
    sleep 0.05
  done
  if ((stop_ok == 0)); then
    echo "  !! $name (pid $server_pid) still running ${stop_timeout}s after SIGTERM: hang at shutdown" >&2
    if [[ $name == cowq ]] && command -v gdb > /dev/null; then
      timeout 30 gdb -p "$server_pid" -batch -ex 'thread apply all bt 8' > "$out/hang-$name-$server_pid.txt" 2>&1 || true
      echo "     stacks: $out/hang-$name-$server_pid.txt" >&2
    fi
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

failures=0
run_one() {  # server conns size depth rep
  local name=$1 conns=$2 size=$3 depth=$4 rep=$5 json rc=0
  start_server "$name"
  json=$(taskset -c 1 "${prio[@]}" "$build/benchmarks/echo_load" 127.0.0.1 "$server_port" \
           "$conns" "$size" "$depth" "$duration" "$warmup" "$server_pid" 2> "$out/driver.err") || rc=$?
  stop_server "$name"
  if ((rc != 0)) || [[ -z $json ]]; then
    echo "  !! driver failed against $name ($conns conns, $size B, depth $depth): $(cat "$out/driver.err")" >&2
    failures=$((failures + 1))
    [[ -z $json ]] && json='{"errors":1}'
  fi
  if ((stop_ok == 0)); then failures=$((failures + 1)); fi
  echo "${json%\}},\"server\":\"$name\",\"rep\":$rep,\"pre_busy_cpus\":$pre_busy,\"loadavg\":\"$pre_load\",\"driver_rc\":$rc,\"stopped_on_sigterm\":$stop_ok}" >> "$runs"
  python3 -c '
import json, sys
r = json.loads(sys.argv[1])
print("  %-4s %9.0f msg/s  cpu %6.3f us/msg  p50 %8.1f us  p99 %8.1f us  driver %5.1f%%  other %5.1f%%" % (
    r["server"], r.get("msgs_per_s", 0), r.get("server_cpu_us_per_msg", -1), r.get("p50_us", 0),
    r.get("p99_us", 0), r.get("driver_cpu_pct", 0), r.get("other_cpu_pct", -1)))' "$(tail -1 "$runs")"
  if ((strict == 1 && failures > 0)); then
    echo "stopping: a server or the driver failed (ECHO_STRICT=1); results so far in $runs" >&2
    exit 1
  fi
}

# --- runs --------------------------------------------------------------------
for cfg in $configs; do
  IFS=: read -r conns size depth <<< "$cfg"
  echo "== $conns connection(s), $size B, depth $depth"
  for rep in $(seq "$reps"); do
    wait_quiet
    echo "  [load] busy CPUs before: $pre_busy, loadavg: $pre_load (waited ${quiet_waited}s)"
    for s in $servers; do run_one "$s" "$conns" "$size" "$depth" "$rep"; done
  done
done

# --- summary -----------------------------------------------------------------
python3 - "$runs" "$out/summary.md" <<'EOF'
import json, statistics, sys
from collections import defaultdict

runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = defaultdict(lambda: defaultdict(list))   # (c,s,d) -> server -> [run]
for r in runs:
    if "conns" not in r:
        continue
    by[(r["conns"], r["size"], r["depth"])][r["server"]].append(r)

def med(xs):
    return statistics.median(xs) if xs else float("nan")

def field(rs, k):
    return [r[k] for r in rs if r.get(k, -1) is not None and r.get(k, -1) >= 0]

def paired_ratio(a, b, k, invert=False):
    # Per repetition (the servers ran back to back), then the median.
    da = {r["rep"]: r[k] for r in a}
    db = {r["rep"]: r[k] for r in b}
    xs = [da[i] / db[i] for i in da if i in db and db[i] > 0 and da[i] > 0]
    return xs

def fmt_ratio(xs):
    if not xs:
        return "n/a"
    return "%.2f (%.2f-%.2f)" % (med(xs), min(xs), max(xs))

servers = ["raw", "cowq", "asio"]
lines = []
P = lines.append
P("Medians over repetitions; ratios are medians of per-repetition ratios (min-max in brackets).")
P("")
P("| conns | size | depth | raw msg/s | cowq msg/s | asio msg/s | cowq/raw | cowq/asio |"
  " raw CPU us/msg | cowq CPU us/msg | asio CPU us/msg | CPU cowq/raw | CPU cowq/asio |")
P("|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---|---|")
keys = sorted(by, key=lambda k: (k[0] == 1, k))
for k in keys:
    g = by[k]
    row = ["%d" % k[0], "%d" % k[1], "%d" % k[2]]
    row += ["%.0f" % med(field(g.get(s, []), "msgs_per_s")) for s in servers]
    row += [fmt_ratio(paired_ratio(g.get("cowq", []), g.get("raw", []), "msgs_per_s")),
            fmt_ratio(paired_ratio(g.get("cowq", []), g.get("asio", []), "msgs_per_s"))]
    row += ["%.3f" % med(field(g.get(s, []), "server_cpu_us_per_msg")) for s in servers]
    row += [fmt_ratio(paired_ratio(g.get("cowq", []), g.get("raw", []), "server_cpu_us_per_msg")),
            fmt_ratio(paired_ratio(g.get("cowq", []), g.get("asio", []), "server_cpu_us_per_msg"))]
    P("| " + " | ".join(row) + " |")
P("")
P("Latency (round trip, microseconds; median of per-run p50 and p99):")
P("")
P("| conns | size | depth | raw p50 | cowq p50 | asio p50 | raw p99 | cowq p99 | asio p99 |")
P("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for k in keys:
    g = by[k]
    row = ["%d" % k[0], "%d" % k[1], "%d" % k[2]]
    row += ["%.1f" % med(field(g.get(s, []), "p50_us")) for s in servers]
    row += ["%.1f" % med(field(g.get(s, []), "p99_us")) for s in servers]
    P("| " + " | ".join(row) + " |")
P("")
P("Spread (min-max over repetitions) and conditions (medians: driver CPU on CPU 1,"
  " CPU used by everything else during the window, in % of one CPU):")
P("")
P("| conns | size | depth | server | msg/s min-max | CPU us/msg min-max | p50 min-max | driver CPU % | other CPU % | SIGTERM exits | errors |")
P("|---:|---:|---:|---|---|---|---|---:|---:|---|---:|")
for k in keys:
    for s in servers + [x for x in by[k] if x not in servers]:
        rs = by[k].get(s, [])
        if not rs:
            continue
        m = field(rs, "msgs_per_s"); c = field(rs, "server_cpu_us_per_msg"); l = field(rs, "p50_us")
        P("| %d | %d | %d | %s | %.0f-%.0f | %.3f-%.3f | %.1f-%.1f | %.0f | %.0f | %d/%d | %d |" % (
            k[0], k[1], k[2], s, min(m or [0]), max(m or [0]), min(c or [0]), max(c or [0]),
            min(l or [0]), max(l or [0]), med(field(rs, "driver_cpu_pct")),
            med(field(rs, "other_cpu_pct")), sum(r.get("stopped_on_sigterm", 0) for r in rs),
            len(rs), sum(r.get("errors", 0) for r in rs)))
P("")
P("Verified bytes in all: %d; driver errors: %d." % (
    sum(r.get("bytes_verified", 0) for r in runs), sum(r.get("errors", 0) for r in runs)))
text = "\n".join(lines) + "\n"
open(sys.argv[2], "w").write(text)
print(text)
EOF
echo "runs: $runs"
echo "summary: $out/summary.md"
if ((failures > 0)); then
  echo "$failures failure(s): see above" >&2
  exit 1
fi
