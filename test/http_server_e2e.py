#!/usr/bin/env python3
"""End to end: starts examples/http_server on one CPU and a free port on
127.0.0.1 and checks it over real sockets: the exact plaintext answer,
HEAD, keep-alive, pipelining, HTTP/1.0, bodies, every error status and the
close after it, the idle and header timeouts, a client that never reads
(bounded memory, dropped after the send timeout), many concurrent connections,
and that requests blocked in an unannotated nanosleep() do not hold up the
ones behind them on that one CPU (cowq's watchdog). Then SIGTERM: the
server must exit 0 with a connection still open.

The blocking part runs last, after the heavy traffic: a pool is then left
with several idle workers, which is where a block by the worker that was
polling the ring once stranded its completions."""
import email.utils
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time

DEADLINE = 120           # seconds for any one wait; generous for sanitizer builds
IDLE_TIMEOUT_MS = 2000
HEADER_TIMEOUT_MS = 2000
SEND_TIMEOUT_MS = 2000
BLOCK_MS = 10000         # the server's maximum
BLOCKERS = 3
CONNECTIONS = 300
HELLO = b"Hello, World!"
DATE_RE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
                     r" \d{4} \d\d:\d\d:\d\d GMT$")


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


class Client:
    """One connection, reading answers framed by Content-Length."""

    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=DEADLINE)
        self.buf = bytearray()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Failure("connection closed while an answer was expected (have %r)" % bytes(self.buf[:200]))
        self.buf += chunk

    def answer(self, head=False):
        """(status, [(name, value)], body) of the next answer."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\r\n\r\n") + 4
        lines = bytes(self.buf[:end - 4]).decode("latin-1").split("\r\n")
        m = re.match(r"^HTTP/1\.1 (\d{3}) [A-Za-z -]+$", lines[0])
        check(m, "bad status line %r" % lines[0])
        fields = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            check(sep and name and name == name.strip(), "bad field line %r" % line)
            fields.append((name, value.strip()))
        length = [v for n, v in fields if n.lower() == "content-length"]
        check(len(length) == 1, "want one Content-Length, got %r" % fields)
        n = 0 if head else int(length[0])
        while len(self.buf) < end + n:
            self._fill()
        body = bytes(self.buf[end:end + n])
        del self.buf[:end + n]
        return int(m.group(1)), fields, body

    def expect_eof(self):
        """The server closes: EOF (not a reset) after whatever was answered."""
        check(not self.buf, "unexpected bytes before EOF: %r" % bytes(self.buf[:200]))
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            raise Failure("connection reset instead of closed")
        check(chunk == b"", "expected EOF, got %r" % chunk[:200])

    def close(self):
        self.sock.close()


def field(fields, name):
    vals = [v for n, v in fields if n.lower() == name.lower()]
    return vals[0] if len(vals) == 1 else None


def get(path, host="127.0.0.1", extra=""):
    return ("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path, host, extra)).encode()


def expect_error(addr, request, status, what):
    c = Client(addr)
    c.send(request)
    st, fields, body = c.answer()
    check(st == status, "%s: want %d, got %d %r" % (what, status, st, body))
    check(field(fields, "Connection") == "close", "%s: no Connection: close in %r" % (what, fields))
    c.expect_eof()
    c.close()
    return fields


def test_plaintext(addr):
    c = Client(addr)
    c.send(get("/"))
    st, fields, body = c.answer()
    check(st == 200, "GET /: status %d" % st)
    check([n for n, _ in fields] == ["Server", "Date", "Content-Type", "Content-Length"],
          "GET /: fields %r" % fields)
    check(field(fields, "Server") == "cowq", "Server: %r" % fields)
    check(field(fields, "Content-Type") == "text/plain", "Content-Type: %r" % fields)
    check(field(fields, "Content-Length") == "13", "Content-Length: %r" % fields)
    date = field(fields, "Date")
    check(DATE_RE.match(date), "Date not IMF-fixdate: %r" % date)
    skew = abs(email.utils.parsedate_to_datetime(date).timestamp() - time.time())
    check(skew < 60, "Date %r is %.0f s away from now" % (date, skew))
    check(body == HELLO, "body %r" % body)

    # HEAD: same fields, no body (the next answer would be garbled otherwise).
    c.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    st, fields, body = c.answer(head=True)
    check(st == 200 and field(fields, "Content-Length") == "13" and body == b"", "HEAD /: %d %r" % (st, fields))

    # Keep-alive: many requests, one connection.
    for i in range(50):
        c.send(get("/"))
        st, _, body = c.answer()
        check(st == 200 and body == HELLO, "keep-alive request %d: %d %r" % (i, st, body))

    # 404 keeps the connection.
    c.send(get("/nowhere"))
    st, fields, _ = c.answer()
    check(st == 404 and field(fields, "Connection") is None, "404: %d %r" % (st, fields))
    c.send(get("/?query=ignored"))
    st, _, body = c.answer()
    check(st == 200 and body == HELLO, "after 404: %d" % st)

    # An absolute-form target and a body that is read and dropped, split
    # over several sends, then the connection goes on.
    c.send(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(10):
        c.send(b"b" * 10000)
    st, _, body = c.answer()
    check(st == 200 and body == HELLO, "GET with a body: %d %r" % (st, body))
    c.send(get("/nowhere"))
    check(c.answer()[0] == 404, "request after a body")
    c.close()


def test_pipelining(addr):
    c = Client(addr)
    n = 100
    kinds = []
    batch = bytearray()
    for i in range(n):
        if i % 5 == 4:
            batch += get("/missing-%d" % i)
            kinds.append(404)
        elif i % 7 == 3:
            batch += b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
            kinds.append("head")
        else:
            batch += get("/?i=%d" % i)
            kinds.append(200)
    c.send(bytes(batch))  # all in one write
    for i, kind in enumerate(kinds):
        st, fields, body = c.answer(head=(kind == "head"))
        if kind == 404:
            check(st == 404, "pipelined %d: want 404, got %d" % (i, st))
        else:
            check(st == 200 and body == (b"" if kind == "head" else HELLO), "pipelined %d: %d %r" % (i, st, body))
    # Pipelined with the last request cut in two writes.
    req = get("/")
    c.send(req * 3 + req[:9])
    c.send(req[9:])
    for i in range(4):
        check(c.answer()[0] == 200, "split pipelined request %d" % i)
    c.close()


def test_http10(addr):
    c = Client(addr)
    c.send(b"GET / HTTP/1.0\r\n\r\n")
    st, fields, body = c.answer()
    check(st == 200 and body == HELLO and field(fields, "Connection") == "close", "1.0: %d %r" % (st, fields))
    c.expect_eof()
    c.close()
    c = Client(addr)
    for _ in range(3):
        c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        st, fields, body = c.answer()
        check(st == 200 and field(fields, "Connection") == "keep-alive", "1.0 keep-alive: %r" % fields)
    c.close()
    c = Client(addr)
    c.send(get("/", extra="Connection: close\r\n"))
    st, fields, body = c.answer()
    check(st == 200 and field(fields, "Connection") == "close", "Connection: close: %r" % fields)
    c.expect_eof()
    c.close()


def test_errors(addr):
    expect_error(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64), 400, "TLS hello")
    expect_error(addr, b"hello there\r\n\r\n", 400, "garbage line")
    expect_error(addr, b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", 400, "field without colon")
    expect_error(addr, b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n", 400, "obs-fold")
    expect_error(addr, b"GET / HTTP/1.1\r\n\r\n", 400, "no Host")
    expect_error(addr, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", 400, "bad Content-Length")
    expect_error(addr, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400,
                 "two Content-Lengths")
    expect_error(addr, b"GET nothing HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad target")
    expect_error(addr, get("/block?ms=abc"), 400, "/block bad ms")
    expect_error(addr, get("/block?ms=10001"), 400, "/block ms too large")
    expect_error(addr, get("/block"), 400, "/block without ms")
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n"
    expect_error(addr, big, 431, "huge header")
    expect_error(addr, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431, "huge request line")
    fields = expect_error(addr, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 405, "POST")
    check(field(fields, "Allow") == "GET, HEAD", "405 without Allow: GET, HEAD: %r" % fields)
    expect_error(addr, b"DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n", 405, "DELETE")
    expect_error(addr, b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 501, "unknown method")
    expect_error(addr, b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                 501, "chunked")
    expect_error(addr, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP/2.0")
    expect_error(addr, b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505, "HTTP/0.9")
    expect_error(addr, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n", 413, "body too large")
    # An error after good pipelined requests: those are answered, then the error, then EOF.
    c = Client(addr)
    c.send(get("/") + get("/") + b"BAD\x01\r\n\r\n" + get("/"))
    for i in range(2):
        check(c.answer()[0] == 200, "good request %d before a bad one" % i)
    check(c.answer()[0] == 400, "bad request after good ones")
    c.expect_eof()
    c.close()


def test_timeouts(addr):
    # Idle: connect, say nothing; the server closes (not before the timeout).
    t0 = time.monotonic()
    c = Client(addr)
    c.expect_eof()
    took = time.monotonic() - t0
    check(took >= 0.9 * IDLE_TIMEOUT_MS / 1000, "idle connection closed after only %.2f s" % took)
    c.close()
    # Idle after a request, too.
    c = Client(addr)
    c.send(get("/"))
    check(c.answer()[0] == 200, "request before idling")
    c.expect_eof()
    c.close()

    # Slowloris: a head trickled a line at a time never completes; the
    # server answers 408 and closes while the client is still trickling.
    c = Client(addr)
    c.sock.setblocking(False)
    t0 = time.monotonic()
    c.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    sel = selectors.DefaultSelector()
    sel.register(c.sock, selectors.EVENT_READ)
    closed = False
    i = 0
    while not closed and time.monotonic() - t0 < DEADLINE:
        if sel.select(timeout=0.2):
            while True:
                try:
                    chunk = c.sock.recv(65536)
                except BlockingIOError:
                    break
                if not chunk:
                    closed = True
                    break
                c.buf += chunk
        else:
            try:
                c.sock.send(b"X-Slow-%d: a\r\n" % i)
            except (BrokenPipeError, ConnectionResetError):
                raise Failure("slowloris: connection reset instead of answered and closed")
            i += 1
    sel.close()
    took = time.monotonic() - t0
    check(closed, "slowloris connection still open after %.0f s" % took)
    check(took >= 0.9 * HEADER_TIMEOUT_MS / 1000, "slowloris closed after only %.2f s" % took)
    c.sock.setblocking(True)
    st, _, _ = c.answer()
    check(st == 408, "slowloris: want 408, got %d" % st)
    c.close()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(next(l for l in f if l.startswith("VmRSS:")).split()[1])


def test_no_reader(addr, pid):
    """A client that pipelines without ever reading: the server stops
    reading once its answers stop going out, holds no more than its
    buffers, and drops the connection after its send timeout."""
    before, _ = stats(addr)
    rss0 = rss_kib(pid)
    s = socket.create_connection(addr)
    s.setblocking(False)
    chunk = get("/") * 1000
    sent = 0
    limit = 512 << 20   # a server that buffered everything would take all this
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_WRITE)
    end = time.monotonic() + DEADLINE
    dropped = False
    while time.monotonic() < end and sent < limit:
        try:
            sent += s.send(chunk)
        except BlockingIOError:
            sel.select(timeout=1)
        except (BrokenPipeError, ConnectionResetError):
            dropped = True
            break
    sel.close()
    check(sent < limit, "server took %d MiB of requests without its answers being read" % (sent >> 20))
    check(dropped, "server kept a connection whose client never reads (%d MiB sent)" % (sent >> 20))
    grew = rss_kib(pid) - rss0
    check(grew < 32 * 1024, "server grew by %d KiB for one connection" % grew)
    s.close()
    after, _ = stats(addr)
    check(after["timed_out"] > before["timed_out"], "not counted as a timeout: %r" % after)


def test_many_connections(addr):
    per = 3
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(CONNECTIONS):
        s = socket.create_connection(addr, timeout=DEADLINE)
        s.setblocking(False)
        st = {"sock": s, "out": get("/?c=%d" % i) * per, "sent": 0, "in": bytearray()}
        conns.append(st)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, st)
    done = 0
    end = time.monotonic() + DEADLINE
    while done < CONNECTIONS:
        check(time.monotonic() < end, "many connections: %d of %d done in time" % (done, CONNECTIONS))
        for key, mask in sel.select(timeout=1):
            st = key.data
            s = st["sock"]
            if mask & selectors.EVENT_WRITE and st["sent"] < len(st["out"]):
                st["sent"] += s.send(st["out"][st["sent"]:])
                if st["sent"] == len(st["out"]):
                    sel.modify(s, selectors.EVENT_READ, st)
            if mask & selectors.EVENT_READ:
                chunk = s.recv(65536)
                check(chunk, "many connections: one closed early")
                st["in"] += chunk
                if st["in"].count(HELLO) == per and st["in"].endswith(HELLO):
                    answers = bytes(st["in"]).split(HELLO)[:-1]
                    for a in answers:
                        check(a.startswith(b"HTTP/1.1 200 OK\r\n") and a.endswith(b"\r\n\r\n"), "bad answer %r" % a)
                    sel.unregister(s)
                    s.close()
                    done += 1
    sel.close()


def stats(addr):
    c = Client(addr)
    c.send(get("/stats"))
    st, _, body = c.answer()
    c.close()
    check(st == 200, "/stats: %d" % st)
    text = body.decode()
    values = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        k, v = line.split()
        values[k] = int(v)
    return values, text


def test_blocking(addr, cpu):
    # BLOCKERS requests each park their worker in nanosleep(BLOCK_MS)...
    blockers = []
    for i in range(BLOCKERS):
        c = Client(addr)
        c.send(get("/block?ms=%d" % BLOCK_MS))
        blockers.append(c)
    # ...which /stats (itself answered by the one CPU's pool meanwhile)
    # shows as they start.
    end = time.monotonic() + DEADLINE
    most = 0
    while True:
        values, _ = stats(addr)
        most = max(most, values["blocking_now"])
        if values["blocking_now"] == BLOCKERS:
            break
        check(time.monotonic() < end, "never %d requests blocked at once (at most %d): the pool ran nothing "
              "beside a blocked worker" % (BLOCKERS, most))
    # Requests issued now, all blockers still asleep, are answered.
    for i in range(10):
        c = Client(addr)
        c.send(get("/") * 3)
        for _ in range(3):
            st, _, body = c.answer()
            check(st == 200 and body == HELLO, "GET / behind blocked workers: %d" % st)
        c.close()
    sel = selectors.DefaultSelector()
    for c in blockers:
        sel.register(c.sock, selectors.EVENT_READ)
    ready = sel.select(timeout=0)
    sel.close()
    check(not ready, "a /block answer came before the GETs issued after it were answered "
          "(blocked requests finished too early to show anything: machine too slow?)")
    for c in blockers:
        st, _, body = c.answer()
        check(st == 200 and body == b"blocked %d ms\n" % BLOCK_MS, "/block answer: %d %r" % (st, body))
        c.close()
    # The runtime's own account: its watchdog found the blocked workers.
    _, text = stats(addr)
    lines = text.split("\n\n", 1)[1].splitlines()
    header = lines[0].split()
    row = next(l.split() for l in lines[1:] if l.split() and l.split()[0] == str(cpu))
    blocked = int(row[header.index("blocked")])
    check(blocked >= BLOCKERS, "watchdog saw %d blocked workers, want >= %d" % (blocked, BLOCKERS))


def start(server, cpu):
    proc = subprocess.Popen([server, "--port", "0", "--cpus", str(cpu),
                             "--idle-timeout-ms", str(IDLE_TIMEOUT_MS),
                             "--header-timeout-ms", str(HEADER_TIMEOUT_MS),
                             "--send-timeout-ms", str(SEND_TIMEOUT_MS)],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        raise Failure("unexpected first line: %r" % line)
    host, port = line.split()[-1].rsplit(":", 1)
    return proc, (host, int(port))


def stop(proc, addr):
    """SIGTERM with an idle connection open: exit 0, after a 'stopped:' line."""
    idle = socket.create_connection(addr)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=DEADLINE)
    rest = proc.stdout.read()
    idle.close()
    check(rc == 0, "server exited with %d" % rc)
    check(rest.startswith("stopped: "), "no 'stopped:' line at exit: %r" % rest)
    print(rest.strip())


def main():
    server = sys.argv[1]
    cpu = min(os.sched_getaffinity(0))
    procs = []
    try:
        proc, addr = start(server, cpu)
        procs.append(proc)
        tests = [
            ("plaintext, HEAD, keep-alive, 404, body", lambda: test_plaintext(addr)),
            ("pipelining", lambda: test_pipelining(addr)),
            ("HTTP/1.0 and Connection: close", lambda: test_http10(addr)),
            ("errors", lambda: test_errors(addr)),
            ("timeouts", lambda: test_timeouts(addr)),
            ("client that never reads", lambda: test_no_reader(addr, proc.pid)),
            ("many connections", lambda: test_many_connections(addr)),
            ("blocking", lambda: test_blocking(addr, cpu)),
        ]
        for name, fn in tests:
            t0 = time.monotonic()
            try:
                fn()
            except (Failure, OSError) as e:
                print("FAIL %s: %s" % (name, e), file=sys.stderr)
                return 1
            print("ok   %s (%.1f s)" % (name, time.monotonic() - t0))
            if proc.poll() is not None:
                print("server died during %s" % name, file=sys.stderr)
                return 1
        values, _ = stats(addr)
        print("server counters:", values)
        stop(proc, addr)
        return 0
    except (Failure, OSError, subprocess.TimeoutExpired) as e:
        print("FAIL: %s" % e, file=sys.stderr)
        return 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
