"""Server engine: a ClickHouse server over HTTP through clickhouse-connect.

Credentials come from settings (POA_CLICKHOUSE_URL / _USER / _PASSWORD), never code.
The client is created with ``autogenerate_session_id=False`` so it may be shared by
threads. Inserts are column-oriented and synchronous (``async_insert=0``).
"""
from __future__ import annotations

import threading
from urllib.parse import urlparse

import clickhouse_connect

from poa.settings import Settings
from sinks.base import Sink
from sinks.ddl import TABLES


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

    def raw(self, sql: str, fmt: str | None) -> bytes:
        with self._lock:
            return self._c.raw_query(sql, fmt=fmt) if fmt else self._c.raw_query(sql)

    def query(self, sql: str) -> tuple[list[str], list[tuple]]:
        with self._lock:
            r = self._c.query(sql)
        return list(r.column_names), [tuple(row) for row in r.result_rows]

    def insert(self, table: str, columns: dict[str, list]) -> None:
        names = list(columns)
        types = dict(TABLES[table].columns)
        with self._lock:
            self._c.insert(f"{self.database}.{table}", [columns[c] for c in names],
                           column_names=names, column_type_names=[types[c] for c in names],
                           column_oriented=True, settings={"async_insert": 0})

    def close(self) -> None:
        self._c.close()
