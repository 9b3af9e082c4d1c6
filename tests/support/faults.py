"""Fault injection for sink writes: a faulty engine wrapper and a faulty TCP link.

- :class:`FaultySink` wraps a real engine sink (``ChdbSink`` or ``HttpSink``) and fails chosen
  ``insert`` calls, either BEFORE the insert reaches the engine (nothing stored) or AFTER it
  landed (the answer is "lost": the rows are stored, the caller sees an error). Both raise a
  transient ``ConnectionResetError`` that ``Sink.write`` turns into ``SinkError``.
- :class:`FaultProxy` is a threaded TCP proxy on 127.0.0.1 (ephemeral port) in front of a
  ClickHouse HTTP endpoint. It understands HTTP/1.1 framing (Content-Length and chunked bodies,
  keep-alive), so it knows where every request starts, and for selected requests (by number among
  the requests whose head or first body bytes contain ``match``, by default
  ``insert_deduplication_token``: the batch inserts) it cuts the client connection:

  * ``before``: the whole request was read, nothing is forwarded (nothing lands);
  * ``after``: the request is forwarded, the server's whole answer is read (the insert landed),
    nothing of it is relayed;
  * ``mid``: the answer is relayed only in part (half of the body, or half of the status line
    when the body is empty) before the cut.

  The client sees its connection close without a (complete) answer, as behind a flaky load
  balancer. What was cut, per mode, is counted in :attr:`FaultProxy.counts`. Uncut exchanges
  are relayed whole, in one write, and the proxy ACKs the server at once (TCP_QUICKACK): a
  query through it does not wait out the ~40 ms that delayed ACKs against Nagle cost on
  tests/support/ch_http.py's answers (headers and body in two writes).
"""
from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterable

from poa_stream.sinks.base import Sink

BEFORE, AFTER, MID = "before", "after", "mid"
SINK_MODES = (BEFORE, AFTER)
PROXY_MODES = (BEFORE, AFTER, MID)


class InjectedFault(ConnectionResetError):
    """A transient transport failure injected by a test (a ConnectionError: retryable)."""


class FaultySink(Sink):
    """Delegates every engine primitive to ``inner``; fails the inserts named in ``schedule``
    ({n: "before" | "after"}, n counting this wrapper's insert calls from 1) or, with
    :meth:`fail_table`, the next insert(s) into one table. ``inserts`` logs every call as
    (n, table, token, outcome) with outcome "ok", "before" or "after"."""

    def __init__(self, inner: Sink, schedule: dict[int, str] | None = None):
        self.inner = inner
        self.database = inner.database
        self.schedule = dict(schedule or {})
        self._by_table: dict[str, list[str]] = {}
        self.calls = 0
        self.recovered: int | None = None
        self.inserts: list[tuple[int, str, str | None, str]] = []
        for mode in self.schedule.values():
            if mode not in SINK_MODES:
                raise ValueError(f"unknown fault mode {mode!r}")

    def fail(self, n: int, mode: str) -> "FaultySink":
        """Fail the ``n``-th insert call (counted from 1 over this wrapper's life)."""
        if mode not in SINK_MODES:
            raise ValueError(f"unknown fault mode {mode!r}")
        self.schedule[n] = mode
        return self

    def fail_table(self, table: str, mode: str, times: int = 1) -> "FaultySink":
        """Fail the next ``times`` inserts into ``table``."""
        if mode not in SINK_MODES:
            raise ValueError(f"unknown fault mode {mode!r}")
        self._by_table.setdefault(table, []).extend([mode] * times)
        return self

    # ---- engine primitives, delegated
    def command(self, sql: str) -> None:
        self.inner.command(sql)

    def query(self, sql: str) -> tuple[list[str], list[tuple]]:
        return self.inner.query(sql)

    def raw(self, sql: str, fmt: str | None, params: dict | None = None) -> bytes:
        return self.inner.raw(sql, fmt, params)

    def use_database(self) -> None:
        self.inner.use_database()

    def close(self) -> None:
        self.inner.close()

    def transient(self, exc: BaseException) -> bool:
        return self.inner.transient(exc)

    def error_code(self, exc: BaseException) -> int | None:
        return self.inner.error_code(exc)

    def recover(self) -> int:
        """As the engine's, remembering what it returned (``recovered``)."""
        self.recovered = super().recover()
        return self.recovered

    def insert(self, table: str, columns: dict[str, list], token: str | None = None) -> None:
        self.calls += 1
        n = self.calls
        mode = self.schedule.pop(n, None)
        if mode is None and self._by_table.get(table):
            mode = self._by_table[table].pop(0)
        if mode == BEFORE:
            self.inserts.append((n, table, token, BEFORE))
            raise InjectedFault(f"injected: insert #{n} into {table} ({token}) dropped before "
                                "it reached the store")
        self.inner.insert(table, columns, token)
        self.inserts.append((n, table, token, mode or "ok"))
        if mode == AFTER:
            raise InjectedFault(f"injected: insert #{n} into {table} ({token}) landed, its "
                                "answer was lost")


# ------------------------------------------------------------------------------ the proxy

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux
_PEEK = 4096  # how much of a request body ``match`` looks at (a statement sent as the body)


class _Closed(Exception):
    """The peer closed the connection (cleanly, between messages, or not)."""


class _Reader:
    """Buffered reads from a socket with HTTP framing helpers; raw bytes are kept verbatim."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> bool:
        try:
            if _QUICKACK is not None:  # ACK at once: a sender waiting on Nagle sends its next segment
                self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            data = self.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            return False
        self.buf += data
        return True

    def until(self, sep: bytes, limit: int = 1 << 20) -> bytes:
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[:i + len(sep)])
                del self.buf[:i + len(sep)]
                return out
            if len(self.buf) > limit:
                raise _Closed("header too long")
            if not self._fill():
                raise _Closed("closed" if not self.buf else "closed mid-message")

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise _Closed("closed mid-body")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def rest(self) -> bytes:
        while self._fill():
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def body(self, headers: dict[str, str]) -> bytes | None:
        """The message body as framed on the wire; None: delimited by the connection's close."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            out = bytearray()
            while True:
                line = self.until(b"\r\n")
                out += line
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        t = self.until(b"\r\n")
                        out += t
                        if t == b"\r\n":
                            return bytes(out)
                out += self.exactly(size + 2)
        if "content-length" in headers:
            return self.exactly(int(headers["content-length"]))
        return None


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return lines[0], headers


def _hard_close(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class FaultProxy:
    """A TCP proxy for ClickHouse's HTTP interface that cuts selected requests' connections.

    Which requests: every request is numbered (``requests``); those whose head (request line
    and headers) or first 4 KiB of body contain ``match`` (None: every request; the default,
    ``insert_deduplication_token``, is in the URL of every batch insert) are *eligible*, numbered
    from 1 (``eligible``). An eligible request is cut when ``cuts`` names its number (a dict
    {n: mode}, or an iterable of numbers whose modes rotate through ``modes``), or else with
    probability ``rate`` drawn from ``random.Random(seed)`` (the modes taking turns), so a run
    is deterministic for the same sequence of requests. ``max_cuts`` bounds the total;
    ``enabled`` may be switched off and on while it runs. ``errors`` lists failures that were
    not planned (the upstream failing): a test expects it empty.

    Use as a context manager; :attr:`port` is where clients connect (``http://127.0.0.1:port``).
    """

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1", *,
                 match: bytes | None = b"insert_deduplication_token",
                 cuts: dict[int, str] | Iterable[int] | None = None, rate: float = 0.0,
                 seed: int = 0, modes: tuple[str, ...] = PROXY_MODES, max_cuts: int | None = None):
        for m in modes:
            if m not in PROXY_MODES:
                raise ValueError(f"unknown cut mode {m!r}")
        self.upstream = (upstream_host, upstream_port)
        self.match = match
        if cuts is not None and not isinstance(cuts, dict):
            cuts = {n: modes[i % len(modes)] for i, n in enumerate(sorted(cuts))}
        self.cuts: dict[int, str] = dict(cuts or {})
        self.rate, self.modes, self.max_cuts = rate, modes, max_cuts
        self._rng = random.Random(seed)
        self._drawn = 0
        self.enabled = True
        self.requests = 0
        self.eligible = 0
        self.counts = {m: 0 for m in PROXY_MODES}
        self.log: list[tuple[int, str, str]] = []  # (eligible n, mode, request line, shortened)
        self.errors: list[str] = []  # unexpected proxy-side failures (should stay empty)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._port = self._listener.getsockname()[1]
        self._threads: set[threading.Thread] = set()
        self._socks: set[socket.socket] = set()
        self._acceptor: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cut_total(self) -> int:
        return sum(self.counts.values())

    # ---- lifecycle
    def start(self) -> "FaultProxy":
        self._acceptor = threading.Thread(target=self._accept, name=f"fault-proxy-{self.port}", daemon=True)
        self._acceptor.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout_s)
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for s in socks:
            _hard_close(s)
        for t in threads:
            t.join(timeout_s)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def summary(self) -> str:
        return (f"{self.requests} requests, {self.eligible} eligible, cut: "
                + ", ".join(f"{m} {n}" for m, n in self.counts.items()))

    # ---- internals
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            client.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = threading.Thread(target=self._serve, args=(client,), daemon=True)
            with self._lock:
                self._socks.add(client)
                self._threads.add(t)
            t.start()

    def _track(self, sock: socket.socket | None, add: bool) -> None:
        if sock is None:
            return
        with self._lock:
            (self._socks.add if add else self._socks.discard)(sock)

    def _decide(self, head: bytes, peek: bytes) -> str | None:
        with self._lock:
            self.requests += 1
            if self.match is not None and self.match not in head and self.match not in peek:
                return None
            self.eligible += 1
            n = self.eligible
            if not self.enabled or (self.max_cuts is not None and self.cut_total >= self.max_cuts):
                return None
            mode = self.cuts.pop(n, None)
            if mode is None and self.rate > 0 and self._rng.random() < self.rate:
                mode = self.modes[self._drawn % len(self.modes)]  # the modes take turns
                self._drawn += 1
            if mode is not None:
                self.counts[mode] += 1
                line = head.split(b"\r\n", 1)[0].decode("latin-1")
                self.log.append((n, mode, line[:160]))
            return mode

    def _exchange(self, conn: list, request: bytes, line: str) -> tuple[bytes, bytes, bool]:
        """Send ``request`` upstream and read the whole answer: (head, body as framed, whether
        the server closes the connection after it). ``conn`` holds [socket, reader] (reused
        between requests of one client connection; a kept-alive connection the server closed
        meanwhile is replaced once, before anything of the request was answered)."""
        for attempt in (0, 1):
            fresh = conn[0] is None
            if fresh:
                sock = socket.create_connection(self.upstream)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._track(sock, True)
                conn[:] = [sock, _Reader(sock)]
            sock, up = conn
            try:
                sock.sendall(request)
                head = up.until(b"\r\n\r\n")
            except (_Closed, OSError):
                self._track(sock, False)
                _hard_close(sock)
                conn[:] = [None, None]
                if fresh or up.buf or attempt:
                    raise
                continue
            status_line, headers = _parse_head(head)
            status = int(status_line.split()[1])
            if line.upper().startswith("HEAD ") or status in (204, 304) or 100 <= status < 200:
                return head, b"", False
            body = up.body(headers)
            closes = body is None or headers.get("connection", "").lower() == "close"
            return head, (up.rest() if body is None else body), closes
        raise AssertionError("unreachable")

    def _serve(self, client: socket.socket) -> None:
        conn: list = [None, None]  # the upstream connection of this client connection
        reader = _Reader(client)
        try:
            while not self._stop.is_set():
                try:
                    head = reader.until(b"\r\n\r\n")
                    line, headers = _parse_head(head)
                    body = reader.body(headers)
                except _Closed:
                    return  # the client closed its connection (or died mid-request)
                mode = self._decide(head, (body or b"")[:_PEEK])
                if mode == BEFORE:
                    return  # the request never reaches the server
                try:
                    resp_head, resp_body, closes = self._exchange(conn, head + (body or b""), line)
                except (_Closed, OSError) as exc:
                    if not self._stop.is_set():
                        with self._lock:
                            self.errors.append(f"upstream failed on {line[:80]!r}: {type(exc).__name__}: {exc}")
                    return
                if mode == AFTER:
                    return  # the server answered (an insert landed); the answer is lost
                if mode == MID:
                    if resp_body:
                        client.sendall(resp_head + resp_body[:max(1, len(resp_body) // 2)])
                    else:  # nothing after the head: cut inside the status line
                        client.sendall(resp_head[:max(1, resp_head.index(b"\r\n") // 2)])
                    return
                client.sendall(resp_head + resp_body)
                if closes or headers.get("connection", "").lower() == "close":
                    return
        except OSError:
            return  # the client went away while we answered
        except Exception as exc:  # a proxy bug: record it, never hang the client
            with self._lock:
                self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            _hard_close(client)
            self._track(client, False)
            if conn[0] is not None:
                _hard_close(conn[0])
                self._track(conn[0], False)
            with self._lock:
                self._threads.discard(threading.current_thread())
