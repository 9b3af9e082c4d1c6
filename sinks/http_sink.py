"""Server engine: a ClickHouse server over HTTP through clickhouse-connect.

Credentials come from settings (POA_CLICKHOUSE_URL / _USER / _PASSWORD), never code.
The client is created with ``autogenerate_session_id=False`` so it may be shared by
threads. Inserts are column-oriented and synchronous (``async_insert=0``) and carry the batch's
``insert_deduplication_token``; transport failures are retryable (:meth:`HttpSink.transient`),
server errors are classified by their ClickHouse code (sinks/base.py).
"""
from __future__ import annotations

import re
import threading
from urllib.parse import urlparse

import clickhouse_connect

from poa_stream.settings import Settings
from poa_stream.sinks.base import Sink
from poa_stream.sinks.ddl import TABLES


# statements that return rows (and so take an output FORMAT); leading comments and brackets skipped
_RETURNS_ROWS = re.compile(r"^(?:\s|--[^\n]*\n|/\*.*?\*/|\()*(SELECT|WITH|SHOW|DESC|DESCRIBE|EXPLAIN|EXISTS|CHECK)\b",
                           re.IGNORECASE | re.DOTALL)


class HttpSink(Sink):
    def __init__(self, url: str, user: str = "default", password: str = "",
                 database: str = "poa", **client_kwargs):
        u = urlparse(url)
        self.database = database
        self._lock = threading.Lock()
        self._c = clickhouse_connect.get_client(
            host=u.hostname or "localhost", port=u.port or (8443 if u.scheme == "https" else 8123),
            secure=u.scheme == "https", username=user, password=password,
            autogenerate_session_id=False, **client_kwargs)

    @classmethod
    def from_settings(cls, s: Settings) -> "HttpSink":
        return cls(s.clickhouse_url, s.clickhouse_user, s.clickhouse_password.get_secret_value(),
                   s.clickhouse_database)

    def use_database(self) -> None:
        self._c.database = self.database

    def command(self, sql: str) -> None:
        with self._lock:
            self._c.command(sql)

    def raw(self, sql: str, fmt: str | None, params: dict | None = None) -> bytes:
        extra = {"parameters": params} if params else {}
        if getattr(self, "_readonly", False):
            extra["settings"] = {"readonly": 1}
        if fmt and not _RETURNS_ROWS.match(sql):
            fmt = None  # clickhouse-connect appends `FORMAT fmt`, which an INSERT ... VALUES would parse as data
        with self._lock:
            return self._c.raw_query(sql, fmt=fmt, **extra) if fmt else self._c.raw_query(sql, **extra)

    def make_readonly(self) -> None:
        """Every later :meth:`raw` runs with ``readonly = 1`` (unless the server's user is
        read-only already, which is as strict and may not set it)."""
        with self._lock:
            level = self._c.command("SELECT getSetting('readonly')")
        self._readonly = int(level or 0) == 0

    def query(self, sql: str) -> tuple[list[str], list[tuple]]:
        with self._lock:
            r = self._c.query(sql)
        return list(r.column_names), [tuple(row) for row in r.result_rows]

    def insert(self, table: str, columns: dict[str, list], token: str | None = None) -> None:
        names = list(columns)
        types = dict(TABLES[table].columns)
        settings = {"async_insert": 0}
        if token:
            settings["insert_deduplication_token"] = token
        with self._lock:
            self._c.insert(f"{self.database}.{table}", [columns[c] for c in names],
                           column_names=names, column_type_names=[types[c] for c in names],
                           column_oriented=True, settings=settings)

    def transient(self, exc: BaseException) -> bool:
        """clickhouse-connect's transport failures (refused, reset, timed out, a proxy's 5xx
        without a ClickHouse error code) are transient; its other errors are not."""
        from clickhouse_connect.driver.exceptions import OperationalError
        if isinstance(exc, OperationalError) or super().transient(exc):
            return True
        if getattr(exc, "code", None) is None and re.search(r"HTTP status (5\d\d|429)\b", str(exc)):
            return True  # a proxy or load balancer in front of the server failed
        try:
            import urllib3.exceptions as u3
            return isinstance(exc, u3.HTTPError)
        except ImportError:  # pragma: no cover
            return False

    def close(self) -> None:
        self._c.close()
