#!/usr/bin/env python3
"""End to end: examples/echo_server publishes its stats on the socket named
by COWQ_STATS_SOCKET while clients load it; tools/cowq_monitor.py reads
them (--once --json, the tables, the continuous mode until Ctrl-C, the
runtime going away) and fails cleanly when there is nothing to read.

    stats_monitor_e2e.py ECHO_SERVER COWQ_MONITOR"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

DEADLINE = 120  # seconds, generous for sanitizer builds
LOAD_CONNECTIONS = 4


def fail(*msg):
    print(*msg, file=sys.stderr)
    sys.exit(1)


class Load:
    """Clients that keep the echo server busy until stopped."""

    def __init__(self, host, port):
        self.stop = threading.Event()
        self.errors = []
        self.round_trips = 0
        self.threads = [threading.Thread(target=self.run, args=(host, port))
                        for _ in range(LOAD_CONNECTIONS)]
        for t in self.threads:
            t.start()

    def run(self, host, port):
        try:
            with socket.create_connection((host, port), timeout=DEADLINE) as s:
                msg = b"x" * 512
                while not self.stop.is_set():
                    s.sendall(msg)
                    got = b""
                    while len(got) < len(msg):
                        chunk = s.recv(len(msg) - len(got))
                        if not chunk:
                            raise ConnectionError("echo server closed early")
                        got += chunk
                    self.round_trips += 1
        except Exception as e:  # reported by finish()
            self.errors.append(e)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(DEADLINE)
        if self.errors:
            fail("load failed:", self.errors[0])


def monitor(script, *args, timeout=DEADLINE):
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                          timeout=timeout)


def check_clean_failure(r, what, needle):
    if r.returncode != 1:
        fail(f"{what}: exit {r.returncode}, want 1; stderr: {r.stderr}")
    if "Traceback" in r.stderr or needle not in r.stderr:
        fail(f"{what}: want a one-line message with {needle!r}, got: {r.stderr}")


def main():
    server, script = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="cowq-monitor-")
    path = os.path.join(tmp, "stats.sock")

    # Nothing there yet: a clear message and exit 1, not a traceback.
    check_clean_failure(monitor(script, path, "--once"), "missing socket", "cannot connect")
    not_socket = os.path.join(tmp, "plain-file")
    with open(not_socket, "w") as f:
        f.write("not a socket\n")
    check_clean_failure(monitor(script, not_socket, "--once"), "regular file", "cannot connect")
    r = monitor(script, path, "-i", "0")
    if r.returncode != 2:
        fail("bad interval: exit", r.returncode, r.stderr)

    env = dict(os.environ, COWQ_STATS_SOCKET=path)
    proc = subprocess.Popen([server, "--port", "0"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            fail("unexpected first line:", line)
        host, port = line.split()[-1].rsplit(":", 1)
        if not os.path.exists(path):
            fail("no stats socket at", path)
        if os.stat(path).st_mode & 0o777 != 0o600:
            fail(f"socket mode {os.stat(path).st_mode & 0o777:o}, want 600")
        load = Load(host, int(port))
        end = time.monotonic() + DEADLINE
        while load.round_trips < 100 and not load.errors:
            if time.monotonic() > end:
                fail("the load never got going")
            time.sleep(0.01)

        # One JSON sample: the snapshot plus rates over the interval.
        r = monitor(script, path, "--once", "--json", "-i", "0.5")
        if r.returncode != 0:
            fail("--once --json: exit", r.returncode, r.stderr)
        lines = r.stdout.splitlines()
        if len(lines) != 1:
            fail("--once --json: want one line, got", r.stdout)
        s = json.loads(lines[0])
        if s["pid"] != proc.pid:
            fail("pid", s["pid"], "is not the server's", proc.pid)
        if not 0.4 < s["interval_s"] < DEADLINE:
            fail("interval_s", s["interval_s"])
        pool_names = [p["name"] for p in s["pools"]]
        if len(s["cpus"]) == 0 or len(pool_names) != 2 * len(s["cpus"]) + 2 * s["numa_nodes"]:
            fail("pools", pool_names, "for CPUs", s["cpus"])
        events = [w for w in s["workqueues"] if w["name"] == "events"]
        if len(events) != 1:
            fail("no 'events' workqueue in", [w["name"] for w in s["workqueues"]])
        if events[0]["queued"] < LOAD_CONNECTIONS:
            fail("'events' queued", events[0]["queued"], "with", LOAD_CONNECTIONS, "connections")
        if sum(p["items_per_s"] for p in s["pools"]) <= 0:
            fail("no items/s under load:", [(p["name"], p["items_per_s"]) for p in s["pools"]])
        for p in s["pools"]:
            if p["items_per_s"] < 0 or p["items_executed"] < 0:
                fail("a negative count in", p)

        # The tables.
        r = monitor(script, path, "--once", "-i", "0.3")
        if r.returncode != 0:
            fail("--once: exit", r.returncode, r.stderr)
        out = r.stdout
        for needle in ("queued/s", "completed/s", "items/s", "created/destroyed", "rates over"):
            if needle not in out:
                fail(f"table without {needle!r}:\n{out}")
        rows = {ln.split()[0] for ln in out.splitlines() if ln.strip()}
        for name in pool_names + ["events", "events_unbound", "workqueue", "pool"]:
            if name not in rows:
                fail(f"table without a row for {name!r}:\n{out}")
        r = monitor(script, path, "--once", "-i", "0.1", "--pools-only")
        if r.returncode != 0 or "items/s" not in r.stdout or "queued/s" in r.stdout:
            fail("--pools-only:", r.returncode, r.stdout, r.stderr)
        r = monitor(script, path, "--once", "-i", "0.1", "--wqs-only", "--json")
        s = json.loads(r.stdout) if r.returncode == 0 else {}
        if "workqueues" not in s or "pools" in s:
            fail("--wqs-only --json:", r.returncode, r.stdout, r.stderr)

        # Continuous: totals first, then rates, until Ctrl-C.
        mon = subprocess.Popen([sys.executable, script, path, "-i", "0.2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        headers = []
        end = time.monotonic() + DEADLINE
        while len(headers) < 3:
            ln = mon.stdout.readline()
            if not ln or time.monotonic() > end:
                fail("continuous mode stopped after", headers, mon.stderr.read())
            if "pid" in ln and "CPUs" in ln:
                headers.append(ln)
        if "totals since start" not in headers[0] or "rates over" not in headers[2]:
            fail("continuous headers:", headers)
        mon.send_signal(signal.SIGINT)
        _, err = mon.communicate(timeout=DEADLINE)
        if mon.returncode != 0 or "Traceback" in err:
            fail("Ctrl-C: exit", mon.returncode, err)

        # The runtime going away ends a running monitor with a message.
        mon = subprocess.Popen([sys.executable, script, path, "-i", "0.2", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if not mon.stdout.readline():
            fail("monitor printed nothing:", mon.stderr.read())
        load.finish()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=DEADLINE)
        if rc != 0:
            fail("echo_server exited with", rc)
        _, err = mon.communicate(timeout=DEADLINE)
        if mon.returncode != 1 or "Traceback" in err or "closed the connection" not in err:
            fail("after the runtime went: exit", mon.returncode, err)
        if os.path.exists(path):
            fail("the socket file is still there after shutdown")
        print("ok: monitor read", len(pool_names), "pools under load; errors reported cleanly")
        return 0
    finally:
        if proc.poll() is None:
            proc.kill()
        for name in ("plain-file", "stats.sock"):
            try:
                os.unlink(os.path.join(tmp, name))
            except FileNotFoundError:
                pass
        os.rmdir(tmp)


if __name__ == "__main__":
    sys.exit(main())
