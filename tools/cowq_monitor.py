#!/usr/bin/env python3
"""cowq-monitor: live pool and workqueue stats of a running cowq runtime.

    cowq-monitor SOCKET [-i SECONDS] [--once] [--json] [--pools-only | --wqs-only]

Connects to the Unix socket on which a runtime publishes its stats
(runtime_options::stats_socket, or the COWQ_STATS_SOCKET environment
variable; '@name' is a Linux abstract socket), asks for a snapshot every
interval and prints, like the kernel's tools/workqueue/wq_monitor.py, a
table of the workqueues and one of the pools. Rates are the difference
between two consecutive snapshots divided by the difference of their
timestamps (the runtime's CLOCK_MONOTONIC), so they are exact whatever the
monitor's own timing; the first sample, having nothing before it, shows
totals since the runtime started. Runs until Ctrl-C; --once takes two
snapshots an interval apart, prints the rates between them and exits.

Exit status: 0 on success or Ctrl-C, 1 if the runtime cannot be reached or
goes away, 2 for bad arguments. docs/monitoring.md describes the columns
and the protocol. Standard library only.
"""
import argparse
import json
import os
import socket
import sys
import time

# Seconds to wait for the runtime to answer one request. It answers in
# microseconds; a runtime that says nothing this long is stuck or not cowq.
ANSWER_TIMEOUT = 10.0


class MonitorError(Exception):
    pass


def socket_address(arg):
    """'@name' is an abstract socket: a NUL byte, then the name."""
    return "\0" + arg[1:] if arg.startswith("@") else arg


class Connection:
    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(ANSWER_TIMEOUT)
        try:
            self.sock.connect(socket_address(path))
        except OSError as e:
            self.sock.close()
            hint = ""
            if isinstance(e, (FileNotFoundError, ConnectionRefusedError)):
                hint = (" (is the runtime running, with stats_socket or "
                        "COWQ_STATS_SOCKET set to this path?)")
            raise MonitorError(f"cannot connect to {path}: {e.strerror or e}{hint}") from None
        self.buf = b""

    def snapshot(self):
        try:
            self.sock.sendall(b"stats\n")
            while b"\n" not in self.buf:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    raise MonitorError(f"{self.path}: the runtime closed the connection")
                self.buf += chunk
        except socket.timeout:
            raise MonitorError(f"{self.path}: no answer within {ANSWER_TIMEOUT:g} s") from None
        except (BrokenPipeError, ConnectionResetError):
            raise MonitorError(f"{self.path}: the runtime closed the connection") from None
        except OSError as e:
            raise MonitorError(f"{self.path}: {e.strerror or e}") from None
        line, self.buf = self.buf.split(b"\n", 1)
        try:
            snap = json.loads(line)
        except ValueError as e:
            raise MonitorError(f"{self.path}: not a cowq stats answer: {e}") from None
        if not isinstance(snap, dict):
            raise MonitorError(f"{self.path}: not a cowq stats answer")
        if "error" in snap:
            raise MonitorError(f"{self.path}: the runtime refused: {snap['error']}")
        for key in ("timestamp_ns", "pools", "workqueues"):
            if key not in snap:
                raise MonitorError(f"{self.path}: the answer has no '{key}'")
        return snap

    def close(self):
        self.sock.close()


def keyed_workqueues(snap):
    """Workqueues by (name, n): names are the user's and need not be unique."""
    seen = {}
    out = {}
    for w in snap["workqueues"]:
        n = seen.get(w["name"], 0)
        seen[w["name"]] = n + 1
        out[(w["name"], n)] = w
    return out


def sample(prev, cur):
    """The snapshot cur with rates against prev (None: the first sample)."""
    # A different process on the same path starts over.
    if prev is not None and prev.get("pid") != cur.get("pid"):
        prev = None
    dt = None
    if prev is not None:
        dt = (cur["timestamp_ns"] - prev["timestamp_ns"]) / 1e9
        if dt <= 0:
            prev, dt = None, None
    pools_before = {p["id"]: p for p in prev["pools"]} if prev else {}
    wqs_before = keyed_workqueues(prev) if prev else {}

    def per_second(now, before, key):
        if dt is None:
            return None
        return (now[key] - (before[key] if before else 0)) / dt

    pools = []
    for p in cur["pools"]:
        p = dict(p)
        p["items_per_s"] = per_second(p, pools_before.get(p["id"]), "items_executed")
        pools.append(p)
    wqs = []
    for key, w in keyed_workqueues(cur).items():
        w = dict(w)
        before = wqs_before.get(key)
        w["queued_per_s"] = per_second(w, before, "queued")
        w["completed_per_s"] = per_second(w, before, "completed")
        wqs.append(w)
    out = {k: v for k, v in cur.items() if k not in ("pools", "workqueues")}
    out["interval_s"] = dt
    out["pools"] = pools
    out["workqueues"] = wqs
    return out


def printable(name):
    """A name for a terminal: control characters shown as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def cpu_list(cpus):
    """[0, 1, 2, 5] -> '0-2,5'"""
    parts = []
    i = 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        parts.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(parts)


def fmt_rate(value, total):
    return f"{total}" if value is None else f"{value:.1f}"


def table(s, show_pools, show_wqs):
    first = s["interval_s"] is None
    when = time.strftime("%H:%M:%S")
    span = "totals since start" if first else f"rates over {s['interval_s']:.2f} s"
    lines = [f"{when}  {printable(str(s.get('name', '?')))} pid {s.get('pid', '?')}, "
             f"CPUs {cpu_list(s.get('cpus', []))}, live coroutines "
             f"{s.get('live_coroutines', '?')}  ({span})"]
    per = "" if first else "/s"
    if show_wqs:
        rows = s["workqueues"]
        width = max([len("workqueue")] + [len(printable(w["name"])) for w in rows])
        lines.append(f"{'workqueue':<{width}} {'queued' + per:>11} {'completed' + per:>12} "
                     f"{'active':>7} {'inactive':>8} {'escaped':>8} {'rescued':>8}")
        for w in rows:
            lines.append(
                f"{printable(w['name']):<{width}} "
                f"{fmt_rate(w['queued_per_s'], w['queued']):>11} "
                f"{fmt_rate(w['completed_per_s'], w['completed']):>12} "
                f"{w['active']:>7} {w['inactive']:>8} {w['escaped_exceptions']:>8} "
                f"{w['rescued']:>8}")
    if show_pools:
        if show_wqs:
            lines.append("")
        rows = s["pools"]
        width = max([len("pool")] + [len(printable(p["name"])) for p in rows])
        lines.append(f"{'pool':<{width}} {'cpu':>4} {'workers':>7} {'idle':>5} {'running':>7} "
                     f"{'pending':>7} {'items' + per:>11} {'blocked':>7} {'hogs':>5} "
                     f"{'maydays':>7} {'rescued':>7} {'created/destroyed':>17}")
        for p in rows:
            cpu = "-" if p["cpu"] < 0 else str(p["cpu"])
            cd = f"{p['workers_created']}/{p['workers_destroyed']}"
            lines.append(
                f"{printable(p['name']):<{width}} {cpu:>4} {p['workers']:>7} {p['idle']:>5} "
                f"{p['running']:>7} {p['pending']:>7} "
                f"{fmt_rate(p['items_per_s'], p['items_executed']):>11} "
                f"{p['blocked_detected']:>7} {p['hogs_detected']:>5} {p['maydays']:>7} "
                f"{p['rescued']:>7} {cd:>17}")
    return "\n".join(lines) + "\n"


def emit(s, args):
    show_pools = not args.wqs_only
    show_wqs = not args.pools_only
    if args.json:
        if not show_pools:
            s = {k: v for k, v in s.items() if k != "pools"}
        if not show_wqs:
            s = {k: v for k, v in s.items() if k != "workqueues"}
        sys.stdout.write(json.dumps(s) + "\n")
    else:
        sys.stdout.write(table(s, show_pools, show_wqs) + "\n")
    sys.stdout.flush()


def positive_seconds(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < v <= 86400:
        raise argparse.ArgumentTypeError("the interval must be in (0, 86400] seconds")
    return v


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="cowq-monitor",
        description="Live pool and workqueue stats of a running cowq runtime.")
    ap.add_argument("socket", metavar="SOCKET",
                    help="the runtime's stats socket (a path, or @name for an abstract socket)")
    ap.add_argument("-i", "--interval", type=positive_seconds, default=1.0, metavar="SECONDS",
                    help="seconds between samples (default 1)")
    ap.add_argument("--once", action="store_true",
                    help="print one sample (two snapshots an interval apart) and exit")
    ap.add_argument("--json", action="store_true",
                    help="print each sample as one JSON line: the snapshot with rates added")
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--pools-only", action="store_true", help="only the pools")
    only.add_argument("--wqs-only", action="store_true", help="only the workqueues")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    conn = None
    try:
        conn = Connection(args.socket)
        prev = conn.snapshot()
        if not args.once:
            emit(sample(None, prev), args)
        deadline = time.monotonic()
        while True:
            # After a stop (^Z, a suspended laptop) sample anew, not in a burst.
            deadline = max(deadline + args.interval, time.monotonic())
            time.sleep(max(0.0, deadline - time.monotonic()))
            cur = conn.snapshot()
            emit(sample(prev, cur), args)
            prev = cur
            if args.once:
                return 0
    except MonitorError as e:
        print(f"cowq-monitor: {e}", file=sys.stderr)
        return 1
    except (KeyError, TypeError) as e:
        print(f"cowq-monitor: {args.socket}: not a cowq stats answer ({e!r})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # Piped into head: end quietly, as other command-line tools do; stdout
        # goes to /dev/null so that Python's last flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if conn is not None:
            conn.close()


if __name__ == "__main__":
    sys.exit(main())
