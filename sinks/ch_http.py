"""ClickHouse's HTTP interface over the embedded chdb engine: live SQL on a worker's store.

``ChdbHttpServer(data_path, host="127.0.0.1", port=0, readonly=False, user=None,
password=None)`` serves the subset of the ClickHouse HTTP interface that
``clickhouse_connect`` (HTTP client, compress on or off), pandas through it, Grafana's
ClickHouse datasource (HTTP protocol) and ``poa sql|report|proof`` use. Every statement
really runs in chdb. The worker runs one, read-only, beside its embedded store
(processors/app.py, settings ``sql_http_*``), because chdb lets one process hold a store:
without it nothing else could query the store while the worker runs. The tests run a
read-write one (tests/conftest.py ``ch_http``) as their ClickHouse server.

Read-only (``readonly=True``): each request's own connection runs ``SET readonly = 1``
after the request's settings, so no INSERT, no DDL, no settings change and no table
function that reads the host or the network (``file()``, ``url()``, ``s3()``...) gets
through; inserts with data are refused before reaching the engine (code 164, READONLY).
Credentials (``user``/``password``; HTTP basic auth, ``X-ClickHouse-User``/``-Key``
headers or ``user``/``password`` URL params, as ClickHouse accepts them) are required when
a password is set; a wrong one is answered 401 with code 516 (AUTHENTICATION_FAILED).
``probes`` (path -> callable returning ``(ok, detail)``) answer GET without credentials, as
JSON, 200 or 503: the worker's ``/health`` and ``/ready`` (processors/app.py).

Served:
  * ``GET /`` and ``GET /ping`` -> ``Ok.``
  * ``GET``/``POST`` queries. The SQL is the ``query`` URL param, the body, or both joined by a
    newline (ClickHouse's rule), so ``INSERT ... FORMAT <fmt>`` followed by data works whether the
    statement travels in the URL or at the head of the body. Such inserts are streamed into
    ``Connection.send_insert``; every other statement goes through ``Connection.query``.
  * Request bodies sent plain or chunked, with Content-Encoding lz4 (concatenated frames, as
    clickhouse_connect sends them), zstd, gzip or deflate.
  * Output format: the statement's own FORMAT clause, else ``default_format``, else TabSeparated.
    Responses are compressed (lz4/zstd/gzip/deflate) when Accept-Encoding asks for it, unless
    ``enable_http_compression=0`` (chdb's default for that setting is 1).
  * URL params: ``database`` (``USE``), ``param_<name>`` (server-side bind parameters),
    ``query_id``, ``session_id`` (the session's ``USE``/``SET`` statements are replayed on
    its later requests). All other params are ClickHouse settings applied with ``SET``, after a
    forced ``async_insert=0`` so inserted rows are readable at once. HTTP-only params that chdb
    does not know (wait_end_of_query, client_protocol_version, ...) are dropped.
  * Headers: X-ClickHouse-Query-Id, -Summary, -Format, -Timezone, -Server-Display-Name. Errors are
    HTTP 500 with ClickHouse's ``Code: N. DB::Exception: ...`` body and X-ClickHouse-Exception-Code.

Not served: authentication (any user is accepted), multipart/form queries and external data,
progress headers, session temporary tables, the native TCP protocol.

chdb rules this relies on (chdb 4.4 / engine 26.9): a process runs ONE embedded engine, bound to
one data path at a time; connections to that same path can coexist and run queries from several
threads at once, each with its own current database and settings; connecting to a different
path fails (BAD_ARGUMENTS) until every connection to the old one is closed, after which the old
path or a new one can be opened again in the same process. The server therefore holds one root
connection for its lifetime and opens a fresh, cheap (~1.5 ms) connection per request.
"""

from __future__ import annotations

import base64
import gzip
import hmac
import json
import re
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler

from poa_stream.httpd import BackgroundHTTPServer
from urllib.parse import parse_qsl, urlsplit

import lz4.frame
from chdb.state.sqlitelike import Connection

try:
    from compression import zstd  # Python 3.14+
except ImportError:
    try:
        from backports import zstd  # installed with clickhouse-connect on older Pythons
    except ImportError:
        zstd = None

# Params that steer the HTTP exchange rather than being settings chdb would accept.
_TRANSPORT_PARAMS = {
    "query", "database", "default_format", "query_id", "session_id", "session_timeout", "session_check",
    "wait_end_of_query", "client_protocol_version", "compress", "decompress", "buffer_size",
    "enable_http_compression", "quota_key", "user", "password", "role",
}
_INSERT_WITH_DATA = re.compile(
    rb"\A\s*(INSERT\s+INTO\s+[^()'\"]+?(?:\([^()]*\))?[^()'\"]*?)\s+FORMAT\s+(\w+)[ \t]*(?:\r?\n)?", re.I
)
_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*\Z", re.I)
_RESULT_STATEMENT = re.compile(r"\s*(?:\(|(?:SELECT|WITH|SHOW|DESC|DESCRIBE|EXISTS|EXPLAIN|CHECK)\b)", re.I)
_SESSION_STATEMENT = re.compile(r"\s*(?:USE|SET)\s", re.I)
_CH_ERROR = re.compile(r"Code: (\d+)\. .*", re.S)
_TSV, _JSON = "text/tab-separated-values; charset=UTF-8", "application/json; charset=UTF-8"
_CONTENT_TYPES = {"native": "application/octet-stream", "rowbinary": "application/octet-stream", "json": _JSON,
                  "jsoncompact": _JSON, "tabseparated": _TSV, "tsv": _TSV, "csv": "text/csv; charset=UTF-8"}
_COMPRESSORS = {"lz4": lz4.frame.compress, "gzip": gzip.compress, "deflate": zlib.compress}
if zstd is not None:
    _COMPRESSORS["zstd"] = zstd.compress


class QueryError(Exception):
    """A failure reported to the client as a ClickHouse exception."""

    def __init__(self, message: str, code: int = 1001):  # 1001 = STD_EXCEPTION
        match = _CH_ERROR.search(message)
        self.code = int(match.group(1)) if match else code
        self.text = match.group(0) if match else f"Code: {code}. DB::Exception: {message}"
        super().__init__(self.text)


def _decompress(data: bytes, encoding: str | None) -> bytes:
    encoding = (encoding or "").strip().lower()
    if not data or encoding in ("", "identity"):
        return data
    if encoding == "lz4":  # clickhouse_connect sends one complete frame per block
        out = bytearray()
        while data:
            frame = lz4.frame.LZ4FrameDecompressor()
            out += frame.decompress(data)
            data = frame.unused_data
        return bytes(out)
    if encoding == "zstd" and zstd is not None:
        return zstd.decompress(data)
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "deflate":
        return zlib.decompress(data)
    raise QueryError(f"Unknown Content-Encoding: {encoding}", code=432)  # UNKNOWN_CODEC


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms ACK stall)
    protocol_version = "HTTP/1.1"  # keep-alive, as urllib3's pool expects

    def log_message(self, format, *args):  # noqa: A002 - silence per-request stderr logging
        pass

    def do_GET(self):
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        owner: ChdbHttpServer = self.server.owner  # type: ignore[attr-defined]
        if "query" not in params and url.path in ("/", "/ping"):
            self._reply(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
        elif url.path in owner.probes:  # ops probes (no credentials): 200 when fine, else 503
            try:
                ok, detail = owner.probes[url.path]()
            except Exception as exc:  # noqa: BLE001 - a probe that fails says so
                ok, detail = False, {"error": f"{type(exc).__name__}: {exc}"}
            self._reply(200 if ok else 503, (json.dumps({"ok": ok, **detail}) + "\n").encode(),
                        {"Content-Type": "application/json; charset=UTF-8"})
        else:
            self._execute(params, b"")

    def do_POST(self):
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        body = self._read_body()  # always drain the body, so the connection stays usable
        self._execute(params, body)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _credentials(self, params: dict[str, str]) -> tuple[str, str]:
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
                return user, password
            except ValueError:
                return "", ""
        return (self.headers.get("X-ClickHouse-User") or params.get("user") or "default",
                self.headers.get("X-ClickHouse-Key") or params.get("password") or "")

    def _execute(self, params: dict[str, str], body: bytes) -> None:
        owner: ChdbHttpServer = self.server.owner  # type: ignore[attr-defined]
        headers = {"X-ClickHouse-Query-Id": params.get("query_id") or str(uuid.uuid4()),
                   "X-ClickHouse-Server-Display-Name": "chdb", "X-ClickHouse-Timezone": owner.timezone}
        if not owner.authorized(*self._credentials(params)):
            text = b"Code: 516. DB::Exception: Authentication failed: password is incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)\n"
            self._reply(401, text, {**headers, "X-ClickHouse-Exception-Code": "516",
                                    "Content-Type": "text/plain; charset=UTF-8"})
            return
        try:
            body = _decompress(body, self.headers.get("Content-Encoding"))
            head = params.get("query", "").encode()
            output, fmt, summary = owner.execute(head + b"\n" + body if head and body else head or body, params)
        except Exception as failure:  # bad body encoding, chdb error, ...: report it ClickHouse-style
            ex = failure if isinstance(failure, QueryError) else QueryError(f"{type(failure).__name__}: {failure}")
            headers["X-ClickHouse-Exception-Code"] = str(ex.code)
            self._reply(500, (ex.text + "\n").encode(), {**headers, "Content-Type": "text/plain; charset=UTF-8"})
            return
        headers["X-ClickHouse-Summary"] = json.dumps(summary)
        headers["Content-Type"] = _CONTENT_TYPES.get((fmt or "").lower(), "text/plain; charset=UTF-8")
        if fmt:
            headers["X-ClickHouse-Format"] = fmt
        # chdb's enable_http_compression defaults to 1, so clickhouse_connect only sends Accept-Encoding.
        if output and params.get("enable_http_compression", "1") not in ("0", "false"):
            accepted = [e.strip().lower() for e in self.headers.get("Accept-Encoding", "").split(",")]
            encoding = next((e for e in accepted if e in _COMPRESSORS), None)
            if encoding:
                output, headers["Content-Encoding"] = _COMPRESSORS[encoding](output), encoding
        self._reply(200, output, headers)

    def _reply(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class ChdbHttpServer:
    """ClickHouse HTTP protocol over chdb; see the module docstring for the served subset."""

    def __init__(self, data_path: str, host: str = "127.0.0.1", port: int = 0, readonly: bool = False,
                 user: str | None = None, password: str | None = None, probes: dict | None = None):
        self.data_path = str(data_path)
        self.probes = dict(probes or {})  # GET path -> () -> (ok, detail dict): /health, /ready
        self.timezone = "UTC"
        self.readonly = readonly
        self.user, self.password = user, password
        self._server = BackgroundHTTPServer(host, port, _Handler, self, "chdb-http")
        self._root: Connection | None = None
        self._sessions: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        return self._server.url

    def authorized(self, user: str, password: str) -> bool:
        """Any user when no password is set; else the configured user and password."""
        if not self.password:
            return True
        return (hmac.compare_digest(user.encode(), (self.user or "default").encode())
                and hmac.compare_digest(password.encode(), self.password.encode()))

    def start(self) -> ChdbHttpServer:
        # The root connection pins the process's embedded engine to data_path while serving.
        self._root = Connection(self.data_path)
        self.timezone = bytes(self._root.query("SELECT timezone()", "TabSeparated").bytes()).decode().strip()
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        if self._root is not None:
            self._root.close()  # frees the engine, so another path (or this one) can be opened
            self._root = None

    def __enter__(self) -> ChdbHttpServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def execute(self, raw: bytes, params: dict[str, str]) -> tuple[bytes, str | None, dict[str, str]]:
        """Run one request's SQL (plus trailing insert data) in chdb: (body, output format, summary)."""
        insert = _INSERT_WITH_DATA.match(raw)
        sql = (insert.group(1) if insert else raw).decode("utf-8", "replace").strip()
        if not sql:
            raise QueryError("Empty query", code=62)  # SYNTAX_ERROR
        if insert and self.readonly:
            raise QueryError("Cannot execute query in readonly mode. (READONLY)", code=164)
        session = params.get("session_id")
        with self._lock:
            prelude = list(self._sessions.get(session, ())) if session else []
        if params.get("database"):
            prelude.append("USE `" + params["database"].replace("`", "\\`") + "`")
        settings = {"async_insert": "0"}
        settings.update((k, v) for k, v in params.items() if k not in _TRANSPORT_PARAMS and not k.startswith("param_"))
        if any(not re.fullmatch(r"\w+", k) for k in settings):
            raise QueryError(f"Invalid setting name in {sorted(settings)}", code=115)  # UNKNOWN_SETTING
        prelude.append("SET " + ", ".join(f"{k} = {_literal(v)}" for k, v in settings.items()))
        if self.readonly:  # last: nothing after it can undo it (readonly=1 forbids changing it)
            prelude.append("SET readonly = 1")
        binds = {k[len("param_"):]: v for k, v in params.items() if k.startswith("param_")}
        started, fmt = time.perf_counter_ns(), None
        try:
            with Connection(self.data_path) as conn:
                for statement in prelude:
                    conn.query(statement)
                if insert:
                    with conn.send_insert(sql, insert.group(2).decode()) as stream:
                        if len(raw) > insert.end():
                            stream.append(raw[insert.end():])
                        done = stream.finish()
                    output, read, written = b"", (0, 0), (done.rows_written, done.bytes_written)
                else:
                    match = _FORMAT_CLAUSE.search(sql)
                    fmt = match.group(1) if match else params.get("default_format") or "TabSeparated"
                    result = conn.query(sql, fmt, params=binds)
                    output = bytes(result.bytes())
                    read = (result.rows_read(), result.bytes_read())
                    written = (result.rows_written(), result.bytes_written())
                    if not (output or match or _RESULT_STATEMENT.match(sql)):
                        fmt = None  # DDL / INSERT VALUES: no result set, like ClickHouse
        except Exception as ex:  # chdb raises ChdbError / RuntimeError carrying "Code: N. DB::Exception: ..."
            raise QueryError(str(ex)) from ex
        if session and _SESSION_STATEMENT.match(sql):
            with self._lock:
                self._sessions.setdefault(session, []).append(sql)
        summary = {"read_rows": read[0], "read_bytes": read[1], "written_rows": written[0], "written_bytes": written[1],
                   "total_rows_to_read": read[0], "result_bytes": len(output),
                   "elapsed_ns": time.perf_counter_ns() - started}
        return output, fmt, {k: str(v) for k, v in summary.items()}
