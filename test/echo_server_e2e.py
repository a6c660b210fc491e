#!/usr/bin/env python3
"""End to end: starts examples/echo_server on a free port, drives many
concurrent connections through it on 127.0.0.1 and checks every byte,
then stops it with SIGTERM and checks it exits cleanly. Twice: receiving
into the pools' shared buffers (the default) and into buffers of each
connection's own (--recv own)."""
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

CONNECTIONS = 200
BYTES_PER_CONNECTION = 64 * 1024
DEADLINE = 120  # seconds, generous for sanitizer builds


def run(server, recv_mode):
    proc = subprocess.Popen([server, "--port", "0", "--recv", recv_mode], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            print("unexpected first line:", line, file=sys.stderr)
            return 1
        host, port = line.split()[-1].rsplit(":", 1)
        port = int(port)

        sel = selectors.DefaultSelector()
        conns = []
        for i in range(CONNECTIONS):
            s = socket.create_connection((host, port))
            s.setblocking(False)
            payload = bytes(((j * 131 + i) & 0xFF) for j in range(BYTES_PER_CONNECTION))
            state = {"sock": s, "out": payload, "sent": 0, "back": bytearray(), "want": payload}
            conns.append(state)
            sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, state)

        done = 0
        end = time.monotonic() + DEADLINE
        while done < CONNECTIONS:
            if time.monotonic() > end:
                print("timed out with", done, "of", CONNECTIONS, "connections done", file=sys.stderr)
                return 1
            for key, mask in sel.select(timeout=1):
                st = key.data
                s = st["sock"]
                if mask & selectors.EVENT_WRITE and st["sent"] < len(st["out"]):
                    st["sent"] += s.send(st["out"][st["sent"]:st["sent"] + 8192])
                    if st["sent"] == len(st["out"]):
                        sel.modify(s, selectors.EVENT_READ, st)
                if mask & selectors.EVENT_READ:
                    chunk = s.recv(65536)
                    if not chunk:
                        print("server closed a connection early", file=sys.stderr)
                        return 1
                    st["back"] += chunk
                    if len(st["back"]) == len(st["want"]):
                        if bytes(st["back"]) != st["want"]:
                            print("corrupted echo", file=sys.stderr)
                            return 1
                        sel.unregister(s)
                        s.close()
                        done += 1
        # A malformed client: connects and resets at once; the server lives.
        s = socket.create_connection((host, port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(b"still alive")
        if s.recv(64) != b"still alive":
            print("server did not survive a reset", file=sys.stderr)
            return 1
        # An idle connection must not hold up shutdown.
        idle = socket.create_connection((host, port))
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=DEADLINE)
        idle.close()
        s.close()
        if rc != 0:
            print("server exited with", rc, file=sys.stderr)
            return 1
        print("ok:", CONNECTIONS, "connections x", BYTES_PER_CONNECTION, "bytes verified, --recv", recv_mode)
        return 0
    finally:
        if proc.poll() is None:
            proc.kill()


def main():
    for mode in ("shared", "own"):
        rc = run(sys.argv[1], mode)
        if rc != 0:
            print("with --recv", mode, file=sys.stderr)
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
