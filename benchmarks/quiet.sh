# Waiting for a quiet machine, for the benchmark scripts (sourced).
# The caller sets quiet_busy (CPUs busy above which the machine is not
# quiet), quiet_wait (seconds at most per wait), quiet_budget (seconds in
# all) and optionally quiet_pause (extra seconds between two looks, 0).

# CPUs kept busy over the next second (all processes; none of ours runs).
busy_cpus() {
  local a b
  read -r -a a < <(head -1 /proc/stat)
  sleep 1
  read -r -a b < <(head -1 /proc/stat)
  local ta=0 tb=0 i
  for i in 1 2 3 4 5 6 7 8; do ta=$((ta + a[i])); tb=$((tb + b[i])); done
  local ia=$((a[4] + a[5])) ib=$((b[4] + b[5]))
  awk -v t=$((tb - ta)) -v i=$((ib - ia)) -v n="$(nproc)" 'BEGIN { if (t <= 0) print 0; else printf "%.2f", n * (t - i) / t }'
}

quiet_spent=0
# Sets pre_busy (busy CPUs at the last look), pre_load (loadavg) and
# quiet_waited (seconds this wait took).
wait_quiet() {
  local b pause=${quiet_pause:-0}
  quiet_waited=0
  b=$(busy_cpus)
  while awk -v b="$b" -v q="$quiet_busy" 'BEGIN { exit !(b > q) }' &&
        ((quiet_waited < quiet_wait && quiet_spent < quiet_budget)); do
    if ((pause > 0)); then sleep "$pause"; fi
    quiet_waited=$((quiet_waited + 1 + pause))
    quiet_spent=$((quiet_spent + 1 + pause))
    b=$(busy_cpus)
  done
  pre_busy=$b
  pre_load=$(cut -d' ' -f1-3 /proc/loadavg)
}
