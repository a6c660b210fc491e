#!/usr/bin/env bash
# blocking_mix: short CPU items queued on a fixed schedule behind 8
# coroutines that make naive blocking calls (see benchmarks/blocking_mix.cpp).
#
#   benchmarks/run_blocking_mix.sh
#
# Builds benchmarks/blocking_mix in a release build directory, calibrates
# the item's arithmetic once (so every run does the same work per item),
# then runs every mode x blocker interleaved within each repetition (the
# order rotates from one repetition to the next), each a fresh process on
# both CPUs, and writes runs.jsonl and summary.md (medians over the
# repetitions of each figure, and the targets).
#
# Environment (defaults in brackets):
#   BM_BUILD    build directory [<repo>/build-blocking]
#   BM_REPS     repetitions [5]
#   BM_RUNS     "MODE:BLOCKER ..." [every blocking mode with nanosleep and
#               pipe, baseline:none, and asio:none for reference]
#   BM_ARGS     extra arguments for every run (e.g. "--items 10000") []
#   BM_NICE     nice value for the runs [-10; 0 to leave alone]
#   BM_TIMEOUT  seconds before a run is killed and counted as failed [60]
#   BM_QUIET_BUSY   before each run, wait while other processes keep more
#                   than this many CPUs busy [0.3]
#   BM_QUIET_WAIT   ... but at most this many seconds per run [10]
#   BM_QUIET_BUDGET ... and this many in all [180]
#   BM_NOTE     free text for meta.txt (e.g. the commit of an exported tree) []
#   BM_OUT      directory for runs.jsonl, logs and summary.md
#               [<build>/blocking-mix-<timestamp>]
#
# Every run also reports the CPUs the rest of the machine used meanwhile
# (other_cpus), to tell a slow executor from a busy machine.
#
# With the defaults the runs take about 2-5 minutes (depending on the quiet
# waits), plus the build.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BM_BUILD:-$root/build-blocking}
reps=${BM_REPS:-5}
runs_spec=${BM_RUNS:-"unannotated:nanosleep annotated:nanosleep nodetect:nanosleep asio:nanosleep unannotated:pipe annotated:pipe nodetect:pipe asio:pipe baseline:none asio:none"}
extra=${BM_ARGS:-}
nice_val=${BM_NICE:--10}
run_timeout=${BM_TIMEOUT:-60}
quiet_busy=${BM_QUIET_BUSY:-0.3}
quiet_wait=${BM_QUIET_WAIT:-10}
quiet_budget=${BM_QUIET_BUDGET:-180}
note=${BM_NOTE:-}
out=${BM_OUT:-$build/blocking-mix-$(date +%Y%m%d-%H%M%S)}

# --- build -----------------------------------------------------------------
if [[ ! -f $build/build.ninja ]]; then
  meson setup "$build" "$root" -Dbuildtype=release -Dbenchmarks=enabled
else
  meson configure "$build" -Dbuildtype=release -Dbenchmarks=enabled
fi
ninja -C "$build" benchmarks/blocking_mix
bin=$build/benchmarks/blocking_mix

mkdir -p "$out"
runs=$out/runs.jsonl
: > "$runs"

# Each run is a new session at nice_val. With autogroup scheduling (the
# kernel's default for sessions) nice only orders threads inside one
# session's group, and every other session's group competes with equal
# weight: so the run's own group gets nice_val as well.
prio=()
autogroup="n/a"
if [[ $nice_val != 0 ]]; then
  if nice -n "$nice_val" true 2>/dev/null && [[ $(nice -n "$nice_val" nice) == "$nice_val" ]]; then
    # shellcheck disable=SC2016
    prio=(setsid -w sh -c 'echo "$0" > /proc/self/autogroup 2>/dev/null; exec nice -n "$0" "$@"' "$nice_val")
    autogroup=$("${prio[@]}" cat /proc/self/autogroup 2>/dev/null | sed 's/.* nice //' || true)
    autogroup=${autogroup:-n/a}
  else
    echo "warning: cannot run at nice $nice_val, running at the default" >&2
    nice_val=0
  fi
fi

# One calibration for every run: the median of three.
iters=$(for i in 1 2 3; do "${prio[@]}" "$bin" --calibrate; done | sort -n | sed -n 2p)

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "command: BM_REPS=$reps BM_NICE=$nice_val${BM_RUNS:+ BM_RUNS=\"$runs_spec\"}${extra:+ BM_ARGS=\"$extra\"} benchmarks/run_blocking_mix.sh"
  if git -C "$root" rev-parse --git-dir > /dev/null 2>&1; then
    echo "commit: $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- lib include || echo ' (+ uncommitted changes in lib/include)')"
  else
    echo "commit: unknown ($root is not a git checkout)"
  fi
  if [[ -n $note ]]; then echo "note: $note"; fi
  echo "kernel: $(uname -r)"
  echo "cpus: $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'))"
  echo "reps $reps, nice $nice_val (session autogroup nice: $autogroup), item iterations $iters (calibrated for 20 us)${extra:+, extra args: $extra}"
} | tee "$out/meta.txt"

# shellcheck source=quiet.sh
source "$root/benchmarks/quiet.sh"

# --- runs ------------------------------------------------------------------
read -r -a order <<< "$runs_spec"
n=${#order[@]}
failures=0
for rep in $(seq "$reps"); do
  echo "== repetition $rep/$reps"
  for k in $(seq 0 $((n - 1))); do
    spec=${order[$(((k + rep - 1) % n))]}
    m=${spec%%:*}
    b=${spec#*:}
    wait_quiet
    rc=0
    # shellcheck disable=SC2086
    # timeout inside the session wrapper: it signals the benchmark itself.
    json=$("${prio[@]}" timeout "$run_timeout" "$bin" --mode "$m" --blocker "$b" --iters "$iters" $extra \
             2> "$out/stderr-$m-$b-$rep.txt") || rc=$?
    [[ -s $out/stderr-$m-$b-$rep.txt ]] || rm -f "$out/stderr-$m-$b-$rep.txt"
    if ((rc != 0)) || [[ -z $json ]]; then
      echo "  !! $m/$b failed (exit $rc): $(head -c 500 "$out/stderr-$m-$b-$rep.txt" 2>/dev/null)" >&2
      failures=$((failures + 1))
      json="{\"mode\":\"$m\",\"blocker\":\"$b\",\"failed\":1}"
    fi
    echo "${json%\}},\"rep\":$rep,\"rc\":$rc,\"pre_busy_cpus\":$pre_busy,\"loadavg\":\"$pre_load\"}" >> "$runs"
    python3 -c '
import json, sys
r = json.loads(sys.argv[1])
if r.get("failed"):
    sys.exit(0)
st = "" if r["blocked_detected"] is None else "  detected %d regions %d hogs %d peak %d" % (
    r["blocked_detected"], r["blocking_regions"], r["hogs_detected"], r["peak_workers"])
print("  %-11s %-9s p50 %9.1f us  p99 %10.1f us  max %10.1f us  %6.0f items/s  wall %7.1f ms  busy before %.2f, others %.2f CPUs%s" % (
    r["mode"], r["blocker"], r["lat_p50_us"], r["lat_p99_us"], r["lat_max_us"],
    r["throughput_per_s"], r["wall_ms"], r["pre_busy_cpus"], r["other_cpus"], st))' "$(tail -1 "$runs")"
  done
done

# --- summary -----------------------------------------------------------------
python3 - "$runs" "$out/meta.txt" "$out/summary.md" <<'EOF'
import json, statistics, sys
from collections import defaultdict

runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
meta = open(sys.argv[2]).read().strip()
by = defaultdict(list)
failed = defaultdict(int)
order = []
for r in runs:
    k = (r["mode"], r["blocker"])
    if k not in order:
        order.append(k)
    if r.get("failed"):
        failed[k] += 1
    else:
        by[k].append(r)

mode_rank = {m: i for i, m in enumerate(["baseline", "unannotated", "annotated", "nodetect", "asio"])}
order.sort(key=lambda k: (k[1] != "none", k[1], mode_rank.get(k[0], 9)))

def med(k, f):
    xs = [r[f] for r in by[k] if r.get(f) is not None]
    return statistics.median(xs) if xs else None

def fmt(v, d=1):
    if v is None:
        return "n/a"
    return "{:,.{}f}".format(v, d)

L = []
P = L.append
P("# blocking_mix")
P("")
P("```")
P(meta)
P("```")
P("")
P("Medians over repetitions of each figure (each run's p50, p99, max, ...).")
P("Queueing latency: from an item's scheduled queue time to its start, in µs.")
P("Stats: the normal per-CPU pools, summed (peak workers: the larger pool's).")
P("")
P("| mode | blocker | runs | p50 µs | p99 µs | max µs | items/s | wall ms | producer lag p99 µs | item run p50 µs |"
  " blocked_detected | blocking_regions | hogs_detected | peak_workers | workers_created |")
P("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for k in order:
    rs = by[k]
    n = "%d" % len(rs) + (" (%d failed)" % failed[k] if failed[k] else "")
    P("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        k[0], k[1], n, fmt(med(k, "lat_p50_us")), fmt(med(k, "lat_p99_us")), fmt(med(k, "lat_max_us")),
        fmt(med(k, "throughput_per_s"), 0), fmt(med(k, "wall_ms")), fmt(med(k, "producer_lag_p99_us")),
        fmt(med(k, "item_run_us_p50")),
        fmt(med(k, "blocked_detected"), 0), fmt(med(k, "blocking_regions"), 0),
        fmt(med(k, "hogs_detected"), 0), fmt(med(k, "peak_workers"), 0), fmt(med(k, "workers_created"), 0)))
P("")
P("Spread over repetitions (min-max of each run's p99 and p50, µs) and conditions (medians; CPUs busy,"
  " out of 2, in the second before the run and during it):")
P("")
P("| mode | blocker | p99 min-max | p50 min-max | busy CPUs before | other processes' CPUs during | this process's CPUs | producer nice | blocking call ms, mean |")
P("|---|---|---|---|---:|---:|---:|---|---:|")
for k in order:
    rs = by[k]
    if not rs:
        continue
    p99 = [r["lat_p99_us"] for r in rs]
    p50 = [r["lat_p50_us"] for r in rs]
    P("| %s | %s | %s-%s | %s-%s | %.2f | %.2f | %.2f | %s | %s |" % (
        k[0], k[1], fmt(min(p99)), fmt(max(p99)), fmt(min(p50)), fmt(max(p50)),
        statistics.median([r["pre_busy_cpus"] for r in rs]), med(k, "other_cpus"), med(k, "own_cpus"),
        ",".join(sorted({str(r["producer_nice"]) for r in rs})),
        fmt(med(k, "block_call_ms_mean"), 2) if k[1] != "none" else "-"))
P("")

# Targets, on the medians.
P("## Targets")
P("")
P("| target | blocker | measured (median p99) | |")
P("|---|---|---|---|")
base = med(("baseline", "none"), "lat_p99_us")
verdicts = []
def row(name, b, v, ok, extra=""):
    if v is None:
        verdicts.append(False)
        P("| %s | %s | no successful run | **not measured** |" % (name, b))
    else:
        verdicts.append(ok)
        P("| %s | %s | %s µs%s | %s |" % (name, b, fmt(v), extra, "met" if ok else "**not met**"))
for b in sorted({k[1] for k in order if k[1] != "none"}):
    v = med(("unannotated", b), "lat_p99_us")
    row("unannotated p99 ≤ 3 ms", b, v, v is not None and v <= 3000)
    v = med(("annotated", b), "lat_p99_us")
    name = "annotated p99 ≤ 1.5 × no-blocker p99 (%s µs)" % fmt(base)
    if base is None:
        row(name, b, None, False)
    else:
        # The same ratio per repetition (the two ran close together).
        bb = {r["rep"]: r["lat_p99_us"] for r in by[("baseline", "none")]}
        xs = sorted(r["lat_p99_us"] / bb[r["rep"]] for r in by[("annotated", b)] if bb.get(r["rep"]))
        extra = ""
        if v is not None:
            extra = " (%.2f×%s)" % (v / base, "; per repetition: median %.2f×, %.2f-%.2f×" % (
                statistics.median(xs), xs[0], xs[-1]) if xs else "")
        row(name, b, v, v is not None and v <= 1.5 * base, extra)
    for m in ("nodetect", "asio"):
        v = med((m, b), "lat_p99_us")
        row("%s shows the stall (p99 ≥ 5 ms)" % m, b, v, v is not None and v >= 5000)
P("")
P("%d of %d targets met." % (sum(verdicts), len(verdicts)))
open(sys.argv[3], "w").write("\n".join(L) + "\n")
print("\n".join(L))
EOF
echo "quiet waits: ${quiet_spent}s in all"
echo "results: $out"
if ((failures > 0)); then
  echo "$failures run(s) failed" >&2
  exit 1
fi
