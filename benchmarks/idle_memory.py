#!/usr/bin/env python3
"""Memory an echo server keeps per idle connection.

    idle_memory.py N SERVER [ARGS...]

Starts SERVER (which must print "listening on ADDRESS:PORT" first, as the
example servers and the benchmark peers do), echoes one 64-byte message
on a first connection so that whatever the server sets up lazily exists,
then opens N more connections, echoes one 64-byte message on each and
leaves them open and idle. Prints the server's resident set size (VmRSS)
before and after, and the growth per connection. Raises RLIMIT_NOFILE for
itself and the server; N above the hard limit needs root.
"""
import os
import resource
import socket
import subprocess
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def echo_once(s):
    s.sendall(b"m" * 64)
    got = b""
    while len(got) < 64:
        chunk = s.recv(64 - len(got))
        if not chunk:
            raise RuntimeError("server closed a connection")
        got += chunk


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    n = int(sys.argv[1])
    cmd = sys.argv[2:]
    limit = (n + 1024, max(n + 1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    resource.setrlimit(resource.RLIMIT_NOFILE, limit)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    socks = []
    try:
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            print("unexpected first line:", line, file=sys.stderr)
            return 1
        host, port = line.split()[2].rsplit(":", 1)
        warm = socket.create_connection((host, int(port)))
        echo_once(warm)
        socks.append(warm)
        time.sleep(0.5)  # settle: threads started, first buffers touched
        before = rss_kib(proc.pid)
        for _ in range(n):
            s = socket.create_connection((host, int(port)))
            echo_once(s)
            socks.append(s)
        time.sleep(0.5)
        after = rss_kib(proc.pid)
        print(f"{' '.join([os.path.basename(cmd[0])] + cmd[1:])}: {n} idle connections, "
              f"RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB, "
              f"{(after - before) * 1024 / n:.0f} bytes per connection")
        return 0
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    sys.exit(main())
