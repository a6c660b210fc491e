#!/usr/bin/env bash
# Builds the micro-benchmarks in release mode and prints, per benchmark, the
# cowq median, the Asio median and the ratio, over 5 repetitions.
#
#   benchmarks/run_micro.sh                       # everything
#   benchmarks/run_micro.sh --benchmark_filter=skynet
#
# Extra arguments go to the benchmark binary. Environment:
#   BUILD_DIR  build directory (default: build-bench at the top of the tree)
#   REPS       repetitions (default 5)
#   OUT        where the JSON results go (default: $BUILD_DIR/micro_runtime.json)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
reps=${REPS:-5}
out=${OUT:-$build/micro_runtime.json}

if [ -d "$build" ]; then
  meson configure "$build" --buildtype=release -Dtests=disabled >/dev/null
else
  meson setup "$build" "$root" --buildtype=release -Dtests=disabled >/dev/null
fi
ninja -C "$build" benchmarks/micro_runtime >/dev/null

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$build/benchmarks/micro_runtime" \
  --benchmark_repetitions="$reps" \
  --benchmark_report_aggregates_only=true \
  --benchmark_out="$out" --benchmark_out_format=json \
  "$@" >&2
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
echo "raw results: $out"
echo

python3 - "$out" <<'EOF'
import json, sys

with open(sys.argv[1]) as f:
    data = json.load(f)

# run_name is "<benchmark>/<implementation>[/min_warmup_time:S]/real_time";
# each implementation reports one per-item counter whose name has a slash
# ("ns/spawn", ...).
rows = {}   # (bench, impl) -> {"median": v, "cv": v, "unit": u}
order = []
for b in data["benchmarks"]:
    if b.get("run_type") != "aggregate":
        continue
    parts = [p for p in b["run_name"].split("/") if ":" not in p]
    if parts and parts[-1] == "real_time":
        parts = parts[:-1]
    bench, impl = "/".join(parts[:-1]), parts[-1]
    unit = next((k for k in b if "/" in k and isinstance(b[k], (int, float))), None)
    if unit is None:
        continue
    key = (bench, impl)
    if key not in rows:
        rows[key] = {"unit": unit}
        order.append(key)
    agg = b.get("aggregate_name")
    if agg == "median":
        rows[key]["median"] = b[unit]
    elif agg == "cv":
        rows[key]["cv"] = b[unit]
    if "error_occurred" in b:
        rows[key]["error"] = b.get("error_message", "error")

def fmt(v):
    if v is None:
        return "-"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"

print(f"{'benchmark':<18} {'cowq variant':<20} {'unit':<12} {'cowq':>9} {'cv':>5} "
      f"{'asio':>9} {'cv':>5} {'asio/cowq':>10}")
print("-" * 94)
ratios = {}
peers = {}
for bench, impl in order:
    if impl.startswith("cowq"):
        own = "asio" + impl[len("cowq"):]
        peers[(bench, impl)] = own if impl != "cowq" and (bench, own) in rows else "asio"
for bench, impl in order:
    if impl.startswith("asio"):
        continue
    # A cowq variant with an Asio variant of the same suffix is paired with
    # it (ping_pong/cowq_cross_cpu with asio_cross_cpu), the rest with "asio".
    peer = peers[(bench, impl)]
    r, a = rows[(bench, impl)], rows.get((bench, peer), {})
    med, amed = r.get("median"), a.get("median")
    # Ratio of throughputs: Asio's time per item over cowq's (> 1: cowq is faster).
    ratio = amed / med if med and amed else None
    ratios[(bench, impl)] = ratio
    pct = lambda d: f"{100 * d['cv']:.0f}%" if "cv" in d else "-"
    print(f"{bench:<18} {impl:<20} {r['unit']:<12} {fmt(med):>9} {pct(r):>5} "
          f"{fmt(amed):>9} {pct(a):>5} {(f'{ratio:.2f}x' if ratio and ratio >= 0.1 else (f'{ratio:.1e}x' if ratio else '-')):>10}"
          + (f"  ERROR: {r['error']}" if "error" in r else ""))
print("(medians of the per-item counters over the repetitions; cv = stddev/mean)")
print()

paired = {(b, p) for (b, _), p in peers.items()}
variants = [(b, i) for b, i in order if i.startswith("asio_") and (b, i) not in paired]
if variants:
    print("other Asio idioms (ratio: Asio variant time / cowq time):")
    for bench, impl in variants:
        v, c = rows[(bench, impl)], rows.get((bench, "cowq"), {})
        vm, cm = v.get("median"), c.get("median")
        ratio = f"{vm / cm:.2f}x" if vm and cm else "-"
        cv = f"{100 * v['cv']:.0f}%" if "cv" in v else "-"
        print(f"  {bench:<18} {impl:<14} {v['unit']:<12} {fmt(vm):>9} {cv:>5}   cowq {fmt(cm)}  -> {ratio}")
    print()

# The targets (docs/benchmarks.md): per-item limits and >= 2x Asio.
def median(bench, impl):
    return rows.get((bench, impl), {}).get("median")

checks = [
    ("local spawn <= 60 ns", median("spawn_many_local", "cowq"), lambda v: v <= 60, "ns"),
    ("yield <= 25 ns", median("yield_many", "cowq"), lambda v: v <= 25, "ns"),
    ("skynet-1M < 60 ms (detached spawn)", median("skynet_1M", "cowq_spawn"), lambda v: v < 60, "ms"),
    ("skynet-1M < 60 ms (detached, spread)", median("skynet_1M", "cowq_spawn_spread"), lambda v: v < 60, "ms"),
    ("skynet-1M < 60 ms (when_all)", median("skynet_1M", "cowq_when_all"), lambda v: v < 60, "ms"),
]
for bench, impl in order:
    if impl == "cowq" or peers.get((bench, impl), "asio") != "asio" or (
            bench == "skynet_1M" and impl in ("cowq_spawn", "cowq_spawn_spread", "cowq_when_all")):
        checks.append((f">= 2x Asio: {bench}/{impl}", ratios.get((bench, impl)),
                       lambda v: v >= 2, "x"))
print("targets:")
for name, v, ok, unit in checks:
    if v is None:
        print(f"  {name:<45} not measured")
    else:
        print(f"  {name:<45} {fmt(v):>8} {unit:<3} {'met' if ok(v) else 'NOT met'}")
EOF
