#!/usr/bin/env python3
"""End to end: starts examples/resp_server on a free port and talks RESP2
to it over 127.0.0.1 with a small client written here (standard library
only). Checks every command's exact replies, expiry (lazy and by the
sweep), pipelining, many concurrent connections, inline commands,
protocol errors (error reply, then the connection closes), that a client
which sends without reading cannot make the server buffer its replies,
the idle timeout, redis-cli if it is installed, and a clean exit on
SIGTERM."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

DEADLINE = 120  # seconds for any one wait; generous for sanitizer builds


class Error(Exception):
    """An error reply (-...)."""

    def __eq__(self, other):
        return isinstance(other, Error) and self.args == other.args

    def __hash__(self):
        return hash(self.args)


class Closed(Exception):
    pass


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Client:
    def __init__(self, addr, timeout=DEADLINE):
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.buf = bytearray()

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise Closed()
        self.buf += chunk

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            self._fill()

    def read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return Error(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data = bytes(self.buf[:n])
            if self.buf[n:n + 2] != b"\r\n":
                raise AssertionError("bulk not followed by CRLF")
            del self.buf[:n + 2]
            return data
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise AssertionError("bad reply type %r in %r" % (t, line))

    def call(self, *args):
        self.send_raw(encode(*args))
        return self.read()

    def expect_closed(self):
        """The server closes the connection (EOF, or a reset)."""
        try:
            while True:
                if not self.sock.recv(65536):
                    return
        except ConnectionResetError:
            return


def check(got, want, what):
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what, got, want))


def wait_for(cond, what, timeout=DEADLINE, poll=0.02):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(poll)


def start(server, *extra):
    proc = subprocess.Popen([server, "--port", "0", *extra], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise AssertionError("unexpected first line: %r" % line)
    host, port = line.split()[-1].rsplit(":", 1)
    return proc, (host, int(port))


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=DEADLINE)
    check(rc, 0, "exit status after SIGTERM")


NOT_INT = Error("ERR value is not an integer or out of range")


def test_basics(addr):
    c = Client(addr)
    check(c.call("PING"), "PONG", "PING")
    check(c.call("ping", "hello"), b"hello", "PING msg")
    check(c.call("PING", "a", "b"), Error("ERR wrong number of arguments for 'ping' command"), "PING arity")
    check(c.call("ECHO", "x y"), b"x y", "ECHO")
    check(c.call("ECHO"), Error("ERR wrong number of arguments for 'echo' command"), "ECHO arity")
    check(c.call("GET", "nokey"), None, "GET missing")
    check(c.call("SET", "k", "v1"), "OK", "SET")
    check(c.call("get", "k"), b"v1", "GET")
    check(c.call("GET"), Error("ERR wrong number of arguments for 'get' command"), "GET arity")
    check(c.call("GET", "a", "b"), Error("ERR wrong number of arguments for 'get' command"), "GET arity 2")
    check(c.call("SET", "k"), Error("ERR wrong number of arguments for 'set' command"), "SET arity")
    # NX / XX
    check(c.call("SET", "k", "v2", "NX"), None, "SET NX on existing key")
    check(c.call("GET", "k"), b"v1", "SET NX left the value")
    check(c.call("SET", "k", "v2", "XX"), "OK", "SET XX on existing key")
    check(c.call("SET", "fresh", "v", "XX"), None, "SET XX on missing key")
    check(c.call("EXISTS", "fresh"), 0, "SET XX created nothing")
    check(c.call("SET", "fresh", "v", "nx"), "OK", "SET NX on missing key")
    check(c.call("SET", "k", "v", "NX", "XX"), Error("ERR syntax error"), "SET NX XX")
    check(c.call("SET", "k", "v", "EX"), Error("ERR syntax error"), "SET EX without value")
    check(c.call("SET", "k", "v", "BOGUS"), Error("ERR syntax error"), "SET bad option")
    check(c.call("SET", "k", "v", "EX", "1", "PX", "100"), Error("ERR syntax error"), "SET EX PX")
    check(c.call("SET", "k", "v", "EX", "abc"), NOT_INT, "SET EX abc")
    check(c.call("SET", "k", "v", "EX", "0"), Error("ERR invalid expire time in 'set' command"), "SET EX 0")
    check(c.call("SET", "k", "v", "PX", "-5"), Error("ERR invalid expire time in 'set' command"), "SET PX -5")
    check(c.call("SET", "k", "v", "EX", str(2**62)), Error("ERR invalid expire time in 'set' command"),
          "SET EX overflow")
    check(c.call("GET", "k"), b"v2", "failed SETs changed nothing")
    # Binary-safe keys and values, CRLF and NUL inside.
    key = b"bin\r\nkey\x00\xff"
    val = bytes(range(256)) * 3 + b"\r\n*1\r\n$4\r\nPING\r\n"
    check(c.call("SET", key, val), "OK", "SET binary")
    check(c.call("GET", key), val, "GET binary")
    check(c.call("SET", "empty", ""), "OK", "SET empty")
    check(c.call("GET", "empty"), b"", "GET empty")
    # DEL / EXISTS
    check(c.call("MSET", "d1", "1", "d2", "2", "d3", "3"), "OK", "MSET")
    check(c.call("EXISTS", "d1", "d1", "d2", "nope"), 3, "EXISTS counts each occurrence")
    check(c.call("DEL", "d1", "d2", "nope"), 2, "DEL")
    check(c.call("DEL", "d1"), 0, "DEL again")
    check(c.call("EXISTS", "d1", "d2", "d3"), 1, "EXISTS after DEL")
    check(c.call("DEL"), Error("ERR wrong number of arguments for 'del' command"), "DEL arity")
    # MGET / MSET
    check(c.call("MGET", "d3", "missing", "k", "d1"), [b"3", None, b"v2", None], "MGET with missing keys")
    check(c.call("MSET", "a"), Error("ERR wrong number of arguments for 'mset' command"), "MSET arity")
    check(c.call("MSET", "a", "1", "b"), Error("ERR wrong number of arguments for 'mset' command"), "MSET odd")
    check(c.call("MGET"), Error("ERR wrong number of arguments for 'mget' command"), "MGET arity")
    # INCR: new key, existing, errors exactly as Redis.
    check(c.call("INCR", "n"), 1, "INCR new key")
    check(c.call("INCR", "n"), 2, "INCR")
    check(c.call("INCRBY", "n", "-10"), -8, "INCRBY")
    check(c.call("DECR", "n"), -9, "DECR")
    check(c.call("DECRBY", "n", "1"), -10, "DECRBY")
    check(c.call("GET", "n"), b"-10", "INCR stores a string")
    for bad in ["abc", "", " 1", "1 ", "+1", "01", "-0", "1.5", "9223372036854775808", "-9223372036854775809"]:
        c.call("SET", "s", bad)
        check(c.call("INCR", "s"), NOT_INT, "INCR on %r" % bad)
        check(c.call("GET", "s"), bad.encode(), "failed INCR left %r" % bad)
    c.call("SET", "max", "9223372036854775807")
    check(c.call("INCR", "max"), Error("ERR increment or decrement would overflow"), "INCR overflow")
    c.call("SET", "min", "-9223372036854775808")
    check(c.call("DECR", "min"), Error("ERR increment or decrement would overflow"), "DECR overflow")
    check(c.call("INCRBY", "n", "x"), NOT_INT, "INCRBY x")
    check(c.call("INCR"), Error("ERR wrong number of arguments for 'incr' command"), "INCR arity")
    # Unknown commands, Redis's wording.
    check(c.call("FOO", "a", "b"),
          Error("ERR unknown command 'FOO', with args beginning with: 'a' 'b' "), "unknown command")
    check(c.call("nosuch"), Error("ERR unknown command 'nosuch', with args beginning with: "),
          "unknown command without args")
    check(c.call("x\r\ny"), Error("ERR unknown command 'x  y', with args beginning with: "),
          "CR LF in an error are blanked")
    # What stock clients send on connect.
    check(c.call("CONFIG", "GET", "save"), [b"save", b""], "CONFIG GET save")
    check(c.call("CONFIG", "GET", "appendonly"), [b"appendonly", b"no"], "CONFIG GET appendonly")
    check(c.call("CONFIG", "GET", "maxmemory"), [], "CONFIG GET unknown")
    check(c.call("COMMAND", "DOCS"), [], "COMMAND DOCS")
    check(c.call("COMMAND"), [], "COMMAND")
    check(c.call("SELECT", "0"), "OK", "SELECT 0")
    check(c.call("SELECT", "1"), Error("ERR DB index is out of range"), "SELECT 1")
    check(c.call("SELECT", "x"), NOT_INT, "SELECT x")
    check(c.call("CLIENT", "GETNAME"), None, "CLIENT GETNAME before")
    check(c.call("CLIENT", "SETNAME", "e2e"), "OK", "CLIENT SETNAME")
    check(c.call("CLIENT", "GETNAME"), b"e2e", "CLIENT GETNAME")
    check(c.call("CLIENT", "SETNAME", "a b"),
          Error("ERR Client names cannot contain spaces, newlines or special characters."), "CLIENT SETNAME a b")
    check(c.call("HELLO", "3"), Error("NOPROTO unsupported protocol version"), "HELLO 3")
    hello = c.call("HELLO", "2")
    check(hello[:6], [b"server", b"redis", b"version", b"7.0.0", b"proto", 2], "HELLO 2")
    check(c.call("DBSIZE") > 0, True, "DBSIZE")
    check(c.call("QUIT"), "OK", "QUIT")
    c.expect_closed()
    c.close()


def test_expiry(addr):
    c = Client(addr)
    check(c.call("SET", "e1", "v", "PX", "300"), "OK", "SET PX")
    ttl = c.call("PTTL", "e1")
    check(0 < ttl <= 300, True, "PTTL %r in (0, 300]" % ttl)
    check(c.call("TTL", "e1"), 0, "TTL rounds 300 ms to 0 s")
    check(c.call("SET", "e2", "v", "EX", "100"), "OK", "SET EX")
    check(c.call("TTL", "e2"), 100, "TTL")
    check(c.call("PTTL", "nokey"), -2, "PTTL missing key")
    check(c.call("SET", "nottl", "v"), "OK", "SET")
    check(c.call("TTL", "nottl"), -1, "TTL without deadline")
    # Lazy expiry: the key vanishes once its deadline passes.
    wait_for(lambda: c.call("GET", "e1") is None, "e1 to expire")
    check(c.call("EXISTS", "e1"), 0, "EXISTS after expiry")
    check(c.call("PTTL", "e1"), -2, "PTTL after expiry")
    # KEEPTTL keeps the deadline, a plain SET clears it, INCR keeps it.
    check(c.call("SET", "e2", "w", "KEEPTTL"), "OK", "SET KEEPTTL")
    check(c.call("TTL", "e2"), 100, "TTL after KEEPTTL")
    check(c.call("SET", "e2", "7"), "OK", "SET clears TTL")
    check(c.call("TTL", "e2"), -1, "TTL after plain SET")
    check(c.call("SET", "e3", "7", "EX", "100"), "OK", "SET EX")
    check(c.call("INCR", "e3"), 8, "INCR with TTL")
    check(c.call("TTL", "e3"), 100, "INCR keeps TTL")
    check(c.call("MSET", "e3", "1"), "OK", "MSET")
    check(c.call("TTL", "e3"), -1, "MSET clears TTL")
    check(c.call("SET", "e4", "v", "PX", "100", "NX"), "OK", "SET PX NX")
    wait_for(lambda: c.call("GET", "e4") is None, "e4 to expire")
    check(c.call("SET", "e4", "again", "NX"), "OK", "SET NX on an expired key")
    check(c.call("GET", "e4"), b"again", "GET after SET NX on an expired key")
    # The sweep: keys nobody touches again still go (DBSIZE counts keys
    # held, expired or not, as in Redis).
    before = c.call("DBSIZE")
    n = 2000
    c.send_raw(b"".join(encode("SET", "sweep:%d" % i, "x", "PX", str(50 + i % 100)) for i in range(n)))
    for i in range(n):
        check(c.read(), "OK", "pipelined SET PX")
    wait_for(lambda: c.call("DBSIZE") == before, "the sweep to remove %d expired keys" % n)
    # And again, once the sweep has gone idle.
    check(c.call("SET", "late", "v", "PX", "50"), "OK", "SET PX after idle sweep")
    wait_for(lambda: c.call("DBSIZE") == before, "the restarted sweep")
    c.close()


def test_pipelining(addr):
    c = Client(addr)
    n = 1000
    cmds = []
    want = []
    for i in range(n):
        k = "p:%d" % (i % 37)
        if i % 3 == 0:
            cmds.append(encode("SET", k, "v%d" % i))
            want.append("OK")
        elif i % 3 == 1:
            cmds.append(encode("INCR", "p:counter"))
            want.append(i // 3 + 1)
        else:
            cmds.append(encode("ECHO", "e%d" % i))
            want.append(b"e%d" % i)
    c.send_raw(b"".join(cmds))  # one write
    for i in range(n):
        check(c.read(), want[i], "pipelined reply %d" % i)
    # Split at every byte boundary of a request: the parser resumes.
    req = encode("SET", "split", "a\r\nb") + encode("GET", "split")
    for i in range(1, len(req)):
        c.send_raw(req[:i])
        c.send_raw(req[i:])
        check(c.read(), "OK", "SET split at %d" % i)
        check(c.read(), b"a\r\nb", "GET split at %d" % i)
    # A value far larger than the read buffer, then small requests again.
    big = os.urandom(5 << 20)
    check(c.call("SET", "big", big), "OK", "SET 5 MiB")
    check(c.call("GET", "big"), big, "GET 5 MiB")
    check(c.call("MGET", "big", "nokey", "big"), [big, None, big], "MGET of large values")
    check(c.call("PING"), "PONG", "PING after a large value")
    c.close()


def test_concurrency(addr):
    conns, per_conn = 100, 50
    errors = []

    def worker(i):
        try:
            c = Client(addr)
            for j in range(per_conn):
                # Pipelined pairs: both replies come back in order.
                c.send_raw(encode("SET", "c:%d" % i, "%d" % j) + encode("INCR", "c:total"))
                check(c.read(), "OK", "SET")
                check(isinstance(c.read(), int), True, "INCR")
                check(c.call("GET", "c:%d" % i), b"%d" % j, "own key")
            c.close()
        except Exception as e:  # reported by the main thread
            errors.append("connection %d: %r" % (i, e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
        if t.is_alive():
            raise AssertionError("a client thread did not finish")
    if errors:
        raise AssertionError("; ".join(errors[:5]))
    c = Client(addr)
    check(c.call("GET", "c:total"), b"%d" % (conns * per_conn), "INCR from %d connections" % conns)
    c.close()


def test_inline(addr):
    c = Client(addr)
    c.send_raw(b"PING\r\n")
    check(c.read(), "PONG", "inline PING")
    c.send_raw(b"SET inl \"a b\\x41\\n\"\r\n")
    check(c.read(), "OK", "inline SET with quotes")
    c.send_raw(b"GET inl\n")  # LF alone ends a line too
    check(c.read(), b"a bA\n", "inline GET")
    c.send_raw(b"\r\n\r\n   \r\nECHO 'it''s'\r\n")  # blank lines are skipped
    check(c.read(), Error("ERR Protocol error: unbalanced quotes in request"), "bad closing quote")
    c.expect_closed()
    c.close()
    c = Client(addr)
    c.send_raw(b"ECHO 'it\\'s'\r\nPING\r\nPING\r\n")
    check([c.read(), c.read(), c.read()], [b"it's", "PONG", "PONG"], "inline pipeline")
    c.send_raw(b"ECHO \"open\r\n")
    check(c.read(), Error("ERR Protocol error: unbalanced quotes in request"), "unbalanced quotes")
    c.expect_closed()
    c.close()


def test_protocol_errors(addr):
    cases = [
        (b"*1\r\n+PING\r\n", "Protocol error: expected '$', got '+'"),
        (b"*abc\r\n", "Protocol error: invalid multibulk length"),
        (b"*-5\r\n", "Protocol error: invalid multibulk length"),
        (b"*3000000\r\n", "Protocol error: invalid multibulk length"),
        (b"*99999999999999999999999\r\n", "Protocol error: invalid multibulk length"),
        (b"*1\r\n$-3\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$x\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$99999999999\r\n", "Protocol error: invalid bulk length"),
        # One byte over the default proto-max-bulk-len (64 MiB): refused
        # before any of it is sent.
        (b"*2\r\n$3\r\nSET\r\n$67108865\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$4\r\nPINGxx\r\n", "Protocol error: expected CRLF after a bulk string of the announced length"),
        (b"*1\r\n$4\r\nPING", None),  # incomplete: no reply yet (checked below)
        (b"*1\r\n$4\rxPING\r\n", "Protocol error: expected '\\n' after '\\r' in bulk length"),
        (b"a" * (70 << 10), "Protocol error: too big inline request"),
        (b"*" + b"1" * (70 << 10), "Protocol error: too big mbulk count string"),
        (b"*1\r\n$" + b"1" * (70 << 10), "Protocol error: too big bulk count string"),
    ]
    for data, msg in cases:
        if msg is None:
            continue
        c = Client(addr)
        c.send_raw(data)
        check(c.read(), Error("ERR " + msg), "reply to %r" % data[:40])
        c.expect_closed()
        c.close()
    # Requests before the bad one are answered, in order, then the error.
    c = Client(addr)
    c.send_raw(b"PING\r\n" + encode("GET") + b"*1\r\n+x\r\n" + encode("PING"))
    check(c.read(), "PONG", "before the error")
    check(c.read(), Error("ERR wrong number of arguments for 'get' command"), "before the error (2)")
    check(c.read(), Error("ERR Protocol error: expected '$', got '+'"), "the error")
    c.expect_closed()
    c.close()
    # "*0" and the null array "*-1" are no requests at all, as in Redis.
    c = Client(addr)
    c.send_raw(b"*0\r\n*-1\r\n" + encode("PING"))
    check(c.read(), "PONG", "after *0 and *-1")
    # An incomplete request gets no reply; the rest completes it.
    c.send_raw(b"*1\r\n$4\r\nPI")
    c.sock.settimeout(0.2)
    try:
        got = c.sock.recv(100)
        raise AssertionError("reply to an incomplete request: %r" % got)
    except socket.timeout:
        pass
    c.sock.settimeout(DEADLINE)
    c.send_raw(b"NG\r\n")
    check(c.read(), "PONG", "completed request")
    c.close()
    # A reset mid-request harms nobody.
    s = socket.create_connection(addr)
    s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nabc")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    c = Client(addr)
    check(c.call("PING"), "PONG", "server alive after protocol errors")
    c.close()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_backpressure(addr, pid):
    """A client that pipelines without reading: the server stops reading
    once its send blocks, and its memory does not grow with the replies it
    owes."""
    c = Client(addr)
    value = os.urandom(128 << 10)
    check(c.call("SET", "bp", value), "OK", "SET 128 KiB")
    # 3000 requests (66 KB, several reads' worth) owing 375 MiB of replies;
    # one read buffer of them alone owes over 90 MiB.
    n = 3000
    req = encode("GET", "bp") * n
    base = rss_kib(pid)
    sender = threading.Thread(target=c.sock.sendall, args=(req,))
    sender.start()
    # Negative property: watch the server for a while as the client reads
    # nothing; a server that buffered its replies would grow at once.
    peak = base
    end = time.monotonic() + 2
    while time.monotonic() < end:
        peak = max(peak, rss_kib(pid))
        time.sleep(0.05)
    grew_mib = (peak - base) / 1024
    if grew_mib > 64:
        raise AssertionError("server RSS grew by %.0f MiB while the client read nothing" % grew_mib)
    for i in range(n):
        r = c.read()
        if r != value:
            raise AssertionError("reply %d to a stalled pipeline: %r" % (i, r[:20] if r else r))
    sender.join(DEADLINE)
    check(sender.is_alive(), False, "sender finished")
    check(c.call("DEL", "bp"), 1, "DEL after the stalled pipeline")
    c.close()
    print("backpressure: ok (server RSS +%.1f MiB at most while stalled)" % grew_mib)


def test_redis_cli(addr):
    cli = shutil.which("redis-cli")
    if cli is None:
        print("redis-cli not installed: skipped that part")
        return
    host, port = addr

    def run(*args):
        r = subprocess.run([cli, "-h", host, "-p", str(port), *args], capture_output=True,
                           timeout=DEADLINE, text=True)
        check(r.returncode, 0, "redis-cli %s exit status" % " ".join(args))
        return r.stdout

    check(run("PING"), "PONG\n", "redis-cli PING")
    check(run("SET", "cli", "hello world"), "OK\n", "redis-cli SET")
    check(run("GET", "cli"), "hello world\n", "redis-cli GET")
    check(run("INCR", "cli:n"), "1\n", "redis-cli INCR")
    check(run("MGET", "cli", "cli:none"), "hello world\n\n", "redis-cli MGET")
    check(run("--no-raw", "MGET", "cli", "cli:none"), '1) "hello world"\n2) (nil)\n', "redis-cli MGET --no-raw")
    check(run("INCR", "cli").strip(), "ERR value is not an integer or out of range", "redis-cli INCR error")
    # Several commands on one connection, from standard input.
    r = subprocess.run([cli, "-h", host, "-p", str(port)], input="SET cli:a 1\nINCR cli:a\nGET cli:a\n",
                       capture_output=True, timeout=DEADLINE, text=True)
    check(r.stdout, "OK\n2\n2\n", "redis-cli from stdin")
    print("redis-cli: ok")


def test_idle_timeout(server):
    proc, addr = start(server, "--timeout", "1")
    try:
        idle = Client(addr)
        # Before the request: the server's idle clock starts after it has
        # read it, so it cannot close the connection sooner than 1 s later.
        t0 = time.monotonic()
        check(idle.call("PING"), "PONG", "PING")
        idle.expect_closed()  # blocks until the server closes it
        waited = time.monotonic() - t0
        check(waited >= 0.95, True, "closed after %.2fs, not before the 1 s timeout" % waited)
        idle.close()
        c = Client(addr)
        check(c.call("PING"), "PONG", "new connection after a timeout")
        c.close()
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()


def main():
    server = sys.argv[1]
    proc, addr = start(server)
    try:
        test_basics(addr)
        print("basics: ok")
        test_expiry(addr)
        print("expiry: ok")
        test_pipelining(addr)
        print("pipelining: ok")
        test_concurrency(addr)
        print("concurrency: ok")
        test_inline(addr)
        print("inline: ok")
        test_protocol_errors(addr)
        print("protocol errors: ok")
        test_backpressure(addr, proc.pid)
        test_redis_cli(addr)
        # Idle connections and one mid-request must not hold up shutdown.
        idle = Client(addr)
        partial = Client(addr)
        partial.send_raw(b"*2\r\n$3\r\nGET\r\n$5\r\nab")
        check(Client(addr).call("PING"), "PONG", "PING before SIGTERM")
        stop(proc)
        idle.close()
        partial.close()
        test_idle_timeout(server)
        print("idle timeout: ok")
        print("ok")
        return 0
    finally:
        if proc.poll() is None:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
