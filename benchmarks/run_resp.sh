#!/usr/bin/env bash
# Redis-protocol macro-benchmark: examples/resp_server against redis-server
# (Debian's), both driven by redis-benchmark.
#
#   benchmarks/run_resp.sh
#
# Installs redis-server and redis-tools if missing (apt), builds
# resp_server (release, in build-resp), then per repetition starts both
# servers afresh, each pinned to CPU 0 (taskset -c 0; resp_server also
# --cpus 0), and runs redis-benchmark pinned to CPU 1 against them,
# interleaved test by test (resp, redis, then redis, resp in the next
# repetition). redis-server runs from the command line in a temporary
# directory, in the foreground, with persistence off, on 127.0.0.1 and a
# port of its own: the system's redis service is neither used nor needed.
# Each test is one redis-benchmark run (-t get, set, ping_inline or
# ping_mbulk; -t ping is the last two) with 50 clients, once without
# pipelining (-P 1) and once with 16 requests in flight per client (-P 16).
# Around each run the script reads the server's utime+stime from
# /proc/PID/stat, giving server CPU microseconds per request, and
# redis-benchmark's own CPU time (its rusage), which shows when the load
# driver, not the server, is the limit.
#
# Environment (defaults in brackets):
#   RESP_BUILD        build directory [<repo>/build-resp]
#   RESP_REPS         repetitions [5]
#   RESP_TESTS        redis-benchmark tests ["get set ping_inline ping_mbulk"]
#   RESP_PIPELINES    -P values ["1 16"]
#   RESP_CLIENTS      -c [50]
#   RESP_REQUESTS_P1  -n at -P 1 [150000]   (a few seconds each here)
#   RESP_REQUESTS_PN  -n with pipelining [1500000]
#   RESP_DATA         -d, value bytes [3]
#   RESP_KEYSPACE     -r, random keys from this many; 0: one key [0]
#   RESP_SERVERS      servers, in the order of the odd repetitions (even
#                     ones reverse it): resp, redis, and resp_alt, a second
#                     resp_server with RESP_ALT_ARGS added ["resp redis"]
#   RESP_ARGS         extra arguments for resp_server [none]
#   RESP_ALT_ARGS     extra arguments for resp_alt [none]
#   RESP_ALT_BIN      resp_alt's binary, e.g. one built from another commit
#                     [the resp_server built here]
#   RESP_NICE         nice value for servers and driver, each in a session of
#                     its own whose autogroup gets it too [-10; 0: leave alone]
#   RESP_RUN_TIMEOUT  seconds one redis-benchmark run may take [120]
#   RESP_BUDGET       seconds the whole measuring part may take; later
#                     repetitions are skipped once it is spent [1800]
#   RESP_QUIET_BUSY, RESP_QUIET_WAIT, RESP_QUIET_BUDGET
#                     waiting for a quiet machine before each repetition
#                     (see quiet.sh) [0.3, 20, 240]
#   RESP_OUT          results directory [<build>/resp-results-<timestamp>]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${RESP_BUILD:-$root/build-resp}
reps=${RESP_REPS:-5}
tests=${RESP_TESTS:-"get set ping_inline ping_mbulk"}
pipelines=${RESP_PIPELINES:-"1 16"}
clients=${RESP_CLIENTS:-50}
requests_p1=${RESP_REQUESTS_P1:-150000}
requests_pn=${RESP_REQUESTS_PN:-1500000}
data_size=${RESP_DATA:-3}
keyspace=${RESP_KEYSPACE:-0}
servers=${RESP_SERVERS:-"resp redis"}
read -r -a resp_args <<< "${RESP_ARGS:-}"
read -r -a alt_args <<< "${RESP_ALT_ARGS:-}"
alt_bin=${RESP_ALT_BIN:-$build/examples/resp_server}
nice_val=${RESP_NICE:--10}
run_timeout=${RESP_RUN_TIMEOUT:-120}
budget=${RESP_BUDGET:-1800}
quiet_busy=${RESP_QUIET_BUSY:-0.3}
quiet_wait=${RESP_QUIET_WAIT:-20}
quiet_budget=${RESP_QUIET_BUDGET:-240}
out=${RESP_OUT:-$build/resp-results-$(date +%Y%m%d-%H%M%S)}

# --- packages ----------------------------------------------------------------
missing=()
for p in redis-server redis-tools; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [[ $status == installed ]] || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  echo "run_resp.sh: installing ${missing[*]}"
  as_root=()
  if [[ $(id -u) -ne 0 ]]; then as_root=(sudo); fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update
  # Debian's policy-rc.d, where present, keeps the packaged service from
  # starting; if it does start, it listens on 6379 and is left alone:
  # the servers measured here run on ports of their own.
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y \
    --no-install-recommends "${missing[@]}"
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  # Only the processes this script started, by pid.
  local p
  for p in "${pids[@]}"; do
    if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build -------------------------------------------------------------------
if [[ ! -f $build/build.ninja ]]; then
  meson setup "$build" "$root" --buildtype=release -Dtests=disabled -Dbenchmarks=disabled
elif [[ $(meson introspect "$build" --buildoptions | python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="buildtype"))') != release ]]; then
  meson configure "$build" --buildtype=release
fi
ninja -C "$build" examples/resp_server

mkdir -p "$out"
runs=$out/runs.jsonl
: > "$runs"

# Each server and each redis-benchmark run is a session of its own at
# nice_val. With autogroup scheduling (the kernel's default for sessions)
# nice only orders threads inside one session's group and every other
# session's group competes with equal weight: so the group gets nice_val
# too (as in run_blocking_mix.sh). setsid execs in place here (a
# background job is no group leader), so $! stays the server's pid.
prio=()
autogroup="n/a"
if [[ $nice_val != 0 ]]; then
  if nice -n "$nice_val" true 2>/dev/null && [[ $(nice -n "$nice_val" nice) == "$nice_val" ]]; then
    # shellcheck disable=SC2016
    prio=(setsid sh -c 'echo "$0" > /proc/self/autogroup 2>/dev/null; exec nice -n "$0" "$@"' "$nice_val")
    autogroup=$("${prio[@]}" cat /proc/self/autogroup 2>/dev/null | sed 's/.* nice //' || true)
    autogroup=${autogroup:-n/a}
  else
    echo "warning: cannot run at nice $nice_val, running at the default" >&2
    nice_val=0
  fi
fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet -- lib include examples 2>/dev/null || echo ' (+ uncommitted changes in lib/include/examples)')"
  echo "kernel: $(uname -r)"
  echo "cpus: $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'))"
  echo "redis-server: $(redis-server --version)"
  echo "servers: $servers; resp_server args: ${RESP_ARGS:-none}; resp_alt: $alt_bin ${RESP_ALT_ARGS:-}"
  echo "clients $clients, requests $requests_p1 (-P 1) / $requests_pn (pipelined), -d $data_size, -r $keyspace, reps $reps, nice $nice_val (session autogroup nice: $autogroup)"
} | tee "$out/meta.txt"

# shellcheck source=quiet.sh
source "$root/benchmarks/quiet.sh"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# name -> sets port_<name> and pid_<name>
start_server() {
  local name=$1 log=$out/server-$1.log port
  : > "$log"
  case $name in
    resp | resp_alt)
      local extra=("${resp_args[@]}") bin=$build/examples/resp_server
      if [[ $name == resp_alt ]]; then
        extra+=("${alt_args[@]}")
        bin=$alt_bin
      fi
      taskset -c 0 "${prio[@]}" "$bin" --port 0 --cpus 0 --address 127.0.0.1 \
        "${extra[@]}" > "$log" 2>&1 &
      ;;
    redis)
      port=$(free_port)
      mkdir -p "$tmp/redis"
      # No config file: defaults, plus persistence off and loopback only.
      taskset -c 0 "${prio[@]}" redis-server --port "$port" --bind 127.0.0.1 --save '' \
        --appendonly no --daemonize no --dir "$tmp/redis" --logfile '' --protected-mode yes \
        > "$log" 2>&1 &
      ;;
  esac
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 200); do
    if [[ $name != redis ]]; then
      port=$(sed -n 's/^listening on [0-9.]*:\([0-9]*\).*/\1/p' "$log")
      [[ -n $port ]] && break
    elif grep -q 'Ready to accept connections' "$log"; then
      break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "server $name did not start:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.05
  done
  if ! redis-cli -h 127.0.0.1 -p "$port" PING | grep -q PONG; then
    echo "server $name does not answer PING on port $port:" >&2
    cat "$log" >&2
    exit 1
  fi
  printf -v "port_$name" '%s' "$port"
  printf -v "pid_$name" '%s' "$pid"
}

stop_server() {
  local name=$1 pid
  pid=$(eval echo "\$pid_$name")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "  !! $name (pid $pid) still running 5 s after SIGTERM" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# One redis-benchmark run, measured: prints a JSON line.
measure() {  # server test pipeline rep
  local name=$1 test=$2 pipeline=$3 rep=$4 port pid n
  port=$(eval echo "\$port_$name")
  pid=$(eval echo "\$pid_$name")
  n=$requests_p1
  ((pipeline > 1)) && n=$requests_pn
  local rflag=()
  ((keyspace > 0)) && rflag=(-r "$keyspace")
  python3 - "$name" "$test" "$pipeline" "$rep" "$pid" "$n" "$run_timeout" \
      taskset -c 1 "${prio[@]}" redis-benchmark -h 127.0.0.1 -p "$port" -c "$clients" -n "$n" \
      -P "$pipeline" -d "$data_size" "${rflag[@]}" -t "$test" --csv <<'EOF'
import csv, io, json, os, resource, subprocess, sys, time
name, test, pipeline, rep, pid, n, limit = sys.argv[1:8]
cmd = sys.argv[8:]
tck = os.sysconf("SC_CLK_TCK")

def server_cpu():
    with open("/proc/%s/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tck  # utime + stime, s

def switches():
    # Context switches of all the server's threads (threads that exited
    # during the window drop out: a lower bound).
    n = 0
    for t in os.listdir("/proc/%s/task" % pid):
        try:
            with open("/proc/%s/task/%s/status" % (pid, t)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        n += int(line.split()[1])
        except OSError:
            pass
    return n

def others_cpu():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / tck  # all busy time, s

def driver_cpu():
    # This process's reaped children: redis-benchmark alone (taskset and
    # nice exec it).
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime

c0, o0, d0, s0, t0 = server_cpu(), others_cpu(), driver_cpu(), switches(), time.monotonic()
p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
try:
    out, err = p.communicate(timeout=int(limit))
except subprocess.TimeoutExpired:
    p.kill()
    out, err = p.communicate()
    err += b"\n(timed out)"
wall = time.monotonic() - t0
c1, o1, d1, s1 = server_cpu(), others_cpu(), driver_cpu(), switches()
rec = {"server": name, "test": test, "pipeline": int(pipeline), "rep": int(rep), "requests": int(n),
       "wall_s": round(wall, 3), "server_cpu_s": round(c1 - c0, 3), "rc": p.returncode}
rows = list(csv.reader(io.StringIO(out.decode(errors="replace"))))
data = [r for r in rows[1:] if r]
if p.returncode == 0 and len(data) == 1:
    rec["rps"] = float(data[0][1])
    rec["p50_ms"] = float(data[0][4])
    rec["p99_ms"] = float(data[0][6])
    rec["max_ms"] = float(data[0][7])
    rec["server_cpu_us_per_req"] = round(1e6 * rec["server_cpu_s"] / int(n), 3)
    # Busy CPU of the whole machine minus the server's, in CPUs: the
    # driver's share plus anyone else's.
    rec["rest_busy_cpus"] = round(((o1 - o0) - (c1 - c0)) / wall, 2)
    rec["driver_cpus"] = round((d1 - d0) / wall, 2)
    rec["server_switches_per_req"] = round((s1 - s0) / int(n), 4)
else:
    rec["error"] = (err.decode(errors="replace") + out.decode(errors="replace"))[-400:]
if b"WARNING" in err:
    rec["warning"] = err.decode(errors="replace").strip()[-200:]
print(json.dumps(rec))
EOF
}

# --- runs --------------------------------------------------------------------
failures=0
started=$(date +%s)
for rep in $(seq "$reps"); do
  if (( $(date +%s) - started > budget )); then
    echo "budget of ${budget}s spent: stopping after $((rep - 1)) repetitions" | tee -a "$out/meta.txt"
    break
  fi
  wait_quiet
  echo "== repetition $rep (busy CPUs before: $pre_busy, loadavg: $pre_load, waited ${quiet_waited}s)"
  order=$servers
  ((rep % 2 == 0)) && order=$(tr ' ' '\n' <<< "$servers" | tac | tr '\n' ' ')
  for s in $order; do start_server "$s"; done
  for pl in $pipelines; do
    for t in $tests; do
      for s in $order; do
        line=$(measure "$s" "$t" "$pl" "$rep")
        echo "$line" >> "$runs"
        python3 -c '
import json, sys
r = json.loads(sys.argv[1])
if "rps" in r:
    print("  -P %-2d %-11s %-8s %10.0f req/s  server %6.3f us/req %4.2f CPUs  p50 %6.3f ms  driver %4.2f CPUs  rest %4.2f CPUs" % (
        r["pipeline"], r["test"], r["server"], r["rps"], r["server_cpu_us_per_req"],
        r["server_cpu_s"] / r["wall_s"], r["p50_ms"], r["driver_cpus"], r["rest_busy_cpus"]))
else:
    print("  -P %-2d %-11s %-8s FAILED: %s" % (r["pipeline"], r["test"], r["server"], r.get("error")))
' "$line"
        if ! grep -q '"rps"' <<< "$line"; then failures=$((failures + 1)); fi
      done
    done
  done
  for s in $order; do stop_server "$s"; done
done

# --- summary -----------------------------------------------------------------
python3 - "$runs" "$out/summary.md" <<'EOF'
import json, statistics, sys
from collections import defaultdict

runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = defaultdict(lambda: defaultdict(dict))  # (pipeline, test) -> server -> rep -> run
for r in runs:
    if "rps" in r:
        by[(r["pipeline"], r["test"])][r["server"]][r["rep"]] = r

def med(xs):
    return statistics.median(xs) if xs else float("nan")

def ratios(a, b, key, invert=False):
    xs = []
    for rep in a:
        if rep in b and a[rep][key] > 0 and b[rep][key] > 0:
            xs.append(b[rep][key] / a[rep][key] if invert else a[rep][key] / b[rep][key])
    return xs

def fmt(xs):
    return "n/a" if not xs else "%.2f (%.2f-%.2f)" % (med(xs), min(xs), max(xs))

L = []
P = L.append
present = {r["server"] for r in runs if "rps" in r}
pairs = [(a, b) for a, b in [("resp", "redis"), ("resp_alt", "redis"), ("resp_alt", "resp")]
         if a in present and b in present]
P("Medians over repetitions; ratios are medians of per-repetition ratios (min-max in brackets).")
P("The CPU ratio is B's server CPU per request over A's: above 1, A is cheaper per request.")
for a_name, b_name in pairs:
    P("")
    P("A = %s, B = %s:" % (a_name, b_name))
    P("")
    P("| -P | test | A req/s | B req/s | req/s A/B | A CPU µs/req | B CPU µs/req | CPU B/A | A p50 ms | B p50 ms | n |")
    P("|---:|---|---:|---:|---|---:|---:|---|---:|---:|---:|")
    for key in sorted(by):
        g = by[key]
        a, b = g.get(a_name, {}), g.get(b_name, {})
        row = [str(key[0]), key[1],
               "%.0f" % med([r["rps"] for r in a.values()]), "%.0f" % med([r["rps"] for r in b.values()]),
               fmt(ratios(a, b, "rps")),
               "%.3f" % med([r["server_cpu_us_per_req"] for r in a.values()]),
               "%.3f" % med([r["server_cpu_us_per_req"] for r in b.values()]),
               fmt(ratios(a, b, "server_cpu_us_per_req", invert=True)),
               "%.3f" % med([r["p50_ms"] for r in a.values()]), "%.3f" % med([r["p50_ms"] for r in b.values()]),
               "%d/%d" % (len(a), len(b))]
        P("| " + " | ".join(row) + " |")
P("")
P("Conditions, medians in CPUs (1.00 = one CPU busy for the whole run): the server, redis-benchmark,"
  " and everything but the server (the driver plus anyone else on the machine):")
P("")
P("| -P | test | server | server CPUs | driver CPUs | rest CPUs | server context switches per request | p99 ms | max ms |")
P("|---:|---|---|---:|---:|---:|---:|---:|---:|")
for key in sorted(by):
    for name in sorted(by[key]):
        rs = by[key][name].values()
        P("| %d | %s | %s | %.2f | %.2f | %.2f | %.3f | %.3f | %.1f |" % (
            key[0], key[1], name, med([r["server_cpu_s"] / r["wall_s"] for r in rs]),
            med([r["driver_cpus"] for r in rs]), med([r["rest_busy_cpus"] for r in rs]),
            med([r.get("server_switches_per_req", float("nan")) for r in rs]),
            med([r.get("p99_ms", float("nan")) for r in rs]), med([r.get("max_ms", float("nan")) for r in rs])))
P("")
fails = [r for r in runs if "rps" not in r]
P("Failed runs: %d." % len(fails))
warn = sorted({r["warning"] for r in runs if "warning" in r})
for w in warn:
    P("redis-benchmark warning: " + w)
text = "\n".join(L) + "\n"
open(sys.argv[2], "w").write(text)
print(text)
EOF
echo "runs: $runs"
echo "summary: $out/summary.md"
if ((failures > 0)); then
  echo "$failures failed run(s): see above" >&2
  exit 1
fi
