#!/usr/bin/env bash
# What an idle echo server costs: CPU time and context switches while no
# client is connected.
#
#   benchmarks/idle_cost.sh [SECONDS]        (default 10)
#
# Starts examples/echo_server --cpus 0,1 on 127.0.0.1 (port 0), lets it
# settle for a second, then over SECONDS reports:
#   - CPU seconds: utime+stime from /proc/PID/stat (clock ticks, all threads),
#     and the scheduler's exact run time (sum of /proc/PID/task/*/schedstat);
#   - voluntary and involuntary context switches, summed over
#     /proc/PID/task/*/status;
#   - the threads it has.
# The raw liburing loop and the Asio server are measured the same way for
# reference (ECHO_IDLE_SERVERS="cowq" to skip them). Builds first, like
# run_echo.sh (ECHO_BUILD, default <repo>/build-echo).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${ECHO_BUILD:-$root/build-echo}
secs=${1:-10}
servers=${ECHO_IDLE_SERVERS:-"cowq raw asio"}
stop_timeout=${ECHO_STOP_TIMEOUT:-5}

pid=""
trap '[[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null; true' EXIT

if [[ ! -f $build/build.ninja ]]; then
  meson setup "$build" "$root" --buildtype=release -Dtests=disabled
fi
ninja -C "$build" examples/echo_server benchmarks/echo_raw_uring benchmarks/echo_asio > /dev/null

ticks() { awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' "/proc/$1/stat"; }
ctxt() {  # voluntary involuntary, summed over threads
  cat /proc/"$1"/task/*/status 2>/dev/null |
    awk '/^voluntary_ctxt_switches/ { v += $2 } /^nonvoluntary_ctxt_switches/ { n += $2 } END { print v + 0, n + 0 }'
}
runtime_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s }'; }
hz=$(getconf CLK_TCK)

log=$(mktemp)
status=0
printf '%-5s %-22s %10s %12s %12s %12s %8s\n' server command "cpu_s" "sched_ms" "vol_cs" "invol_cs" threads
for s in $servers; do
  case $s in
    cowq) cmd=("$build/examples/echo_server" --port 0 --cpus 0,1 --address 127.0.0.1) ;;
    raw) cmd=("$build/benchmarks/echo_raw_uring" --port 0 --address 127.0.0.1) ;;
    asio) cmd=("$build/benchmarks/echo_asio" --port 0 --address 127.0.0.1) ;;
    *) echo "unknown server $s" >&2; exit 2 ;;
  esac
  : > "$log"  # not only in the child: the wait below must not see the previous server's line
  "${cmd[@]}" > "$log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q '^listening on' "$log" && break; sleep 0.05; done
  grep -q '^listening on' "$log" || { echo "$s did not start:" >&2; cat "$log" >&2; exit 1; }
  sleep 1
  t0=$(ticks "$pid"); r0=$(runtime_ns "$pid"); read -r v0 n0 < <(ctxt "$pid")
  sleep "$secs"
  t1=$(ticks "$pid"); r1=$(runtime_ns "$pid"); read -r v1 n1 < <(ctxt "$pid")
  threads=$(ls /proc/"$pid"/task | wc -l)
  label=$(basename "${cmd[0]}")
  [[ $s == cowq ]] && label="echo_server --cpus 0,1"
  printf '%-5s %-22s %10.3f %12.3f %12d %12d %8d\n' "$s" "$label" \
    "$(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN { print (b - a) / hz }')" \
    "$(awk -v a="$r0" -v b="$r1" 'BEGIN { print (b - a) / 1e6 }')" \
    $((v1 - v0)) $((n1 - n0)) "$threads"
  kill -TERM "$pid"
  ok=0
  for _ in $(seq $((stop_timeout * 20))); do kill -0 "$pid" 2>/dev/null || { ok=1; break; }; sleep 0.05; done
  if ((ok == 0)); then
    echo "  !! $s (pid $pid) did not exit within ${stop_timeout}s of SIGTERM: hang at shutdown (killed)" >&2
    kill -KILL "$pid" 2>/dev/null || true
    status=1
  fi
  wait "$pid" 2>/dev/null || true
  pid=""
done
echo "(over ${secs} s idle; cpu_s = utime+stime from /proc/PID/stat at ${hz} Hz, sched_ms = exact run time from schedstat)"
rm -f "$log"
exit $status
