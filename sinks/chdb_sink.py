"""Embedded engine: chdb (ClickHouse in-process), one persistent data directory.

chdb 4.x runs one engine per process, bound to one data path while any connection
to it is open (and a second process cannot open a path another one holds). Sinks on
the same path share one session (reference counted); opening another path while
one is open raises a clear error; closing the last sink frees the engine so another
path can be opened. Calls are serialized with a lock, so the sink may be used from
worker threads (``asyncio.to_thread``). Inserts go columnar through Arrow:
``INSERT ... SELECT * FROM Python(table)``, with the batch's ``insert_deduplication_token``.
"""
from __future__ import annotations

import contextlib
import threading
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
from chdb import session as chdb_session

from poa_stream.sinks.base import Sink
from poa_stream.sinks.ddl import TABLES

_SESSIONS: dict[str, list] = {}  # path -> [session, refcount]
_LOCK = threading.RLock()


def _arrow_type(ch_type: str) -> pa.DataType:
    t = ch_type
    if t.startswith("LowCardinality("):
        t = t[len("LowCardinality("):-1]
    if t.startswith("Nullable("):
        t = t[len("Nullable("):-1]
    if t.startswith("Array("):
        return pa.list_(_arrow_type(t[len("Array("):-1]))
    if t.startswith("DateTime64"):
        return pa.timestamp("ms", tz="UTC")
    if t == "Int128":  # values beyond int64 travel as decimal128 (ClickHouse casts on insert)
        return pa.int64()
    return {"String": pa.string(), "UInt64": pa.uint64(), "UInt32": pa.uint32(),
            "Int64": pa.int64(), "Float64": pa.float64()}[t]


_I64 = (-(1 << 63), (1 << 63) - 1)


def _array(values: list, ch_type: str) -> pa.Array:
    t = _arrow_type(ch_type)
    if ch_type == "Int128" and values and (min(values) < _I64[0] or max(values) > _I64[1]):
        return pa.array([Decimal(v) for v in values], type=pa.decimal128(38, 0))
    return pa.array(values, type=t)


def _pylist(col) -> list:
    """Python values of an Arrow result column; Int128/UInt128 arrive as 16 little-endian
    bytes (fixed_size_binary[16]) and become ints."""
    if pa.types.is_fixed_size_binary(col.type) and col.type.byte_width == 16:
        return [None if b is None else int.from_bytes(b, "little", signed=True) for b in col.to_pylist()]
    return col.to_pylist()


def _token(token: str) -> str:
    if not all(ch.isalnum() or ch in ".:_-" for ch in token):
        raise ValueError(f"dedup token {token!r}: letters, digits and . : _ - only")
    return token


@contextlib.contextmanager
def _engine_stderr_quiet():
    """While the engine starts: its C++ code prints a failure (a store locked by another
    process) to file descriptor 2 itself, before Python gets the exception; that text is
    dropped here (the exception carries it), so a command can fail in one line."""
    import os
    import tempfile
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _open(path: Path) -> chdb_session.Session:
    key = str(path.resolve())
    with _LOCK:
        if key not in _SESSIONS:
            if _SESSIONS:
                raise RuntimeError(f"chdb runs one store per process: {next(iter(_SESSIONS))} "
                                   f"is open, so {key} cannot be; close the other sink first")
            path.mkdir(parents=True, exist_ok=True)
            try:
                with _engine_stderr_quiet():
                    _SESSIONS[key] = [chdb_session.Session(key), 0]
            except Exception as exc:
                raise RuntimeError(f"cannot open the store {key}: {exc} (is a worker or another "
                                   "`poa` process using it? stop it, or query that process)") from exc
        _SESSIONS[key][1] += 1
        return _SESSIONS[key][0]


def _release(path: Path) -> None:
    key = str(path.resolve())
    with _LOCK:
        entry = _SESSIONS.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _SESSIONS[key]
            entry[0].close()


class ChdbSink(Sink):
    def __init__(self, path: str | Path, database: str = "poa"):
        self.path = Path(path)
        self.database = database
        self._s = _open(self.path)
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release(self.path)

    def use_database(self) -> None:
        self.command(f"USE {self.database}")

    def command(self, sql: str) -> None:
        with _LOCK:
            self._s.query(sql)

    def raw(self, sql: str, fmt: str | None, params: dict | None = None) -> bytes:
        with _LOCK:
            if params:
                res = self._s.query(sql, fmt or "TSV", params=params) if fmt else self._s.query(sql, params=params)
            else:
                res = self._s.query(sql, fmt) if fmt else self._s.query(sql)
        return res.bytes()

    def shared(self) -> bool:
        """Whether another sink of this process uses the same session."""
        with _LOCK:
            entry = _SESSIONS.get(str(self.path.resolve()))
            return bool(entry and entry[1] > 1)

    def make_readonly(self) -> None:
        """``readonly = 1`` for the rest of this session: no writes, no DDL, no settings
        changes, no table functions (``file()``, ``url()``...). Only on a session no other
        sink shares (it cannot be undone)."""
        if self.shared():
            raise RuntimeError(f"the store {self.path} is open elsewhere in this process")
        self.command("SET readonly = 1")

    def query(self, sql: str) -> tuple[list[str], list[tuple]]:
        with _LOCK:
            tbl = self._s.query(sql, "ArrowTable")
        cols = tbl.column_names
        data = [_pylist(tbl.column(i)) for i in range(len(cols))]
        return cols, list(zip(*data))

    def insert(self, table: str, columns: dict[str, list], token: str | None = None) -> None:
        types = dict(TABLES[table].columns)
        arrow = pa.table({c: _array(v, types[c]) for c, v in columns.items()})  # noqa: F841
        cols = ", ".join(f"`{c}`" for c in columns)
        dedup = f", insert_deduplication_token = '{_token(token)}'" if token else ""
        with _LOCK:
            self._s.query(f"INSERT INTO {self.database}.{table} ({cols}) "
                          f"SELECT {cols} FROM Python(arrow) SETTINGS async_insert = 0{dedup}")
