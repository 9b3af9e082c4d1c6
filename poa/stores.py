"""Which store a command reads or writes: one rule for every ``poa`` command.

``resolve(settings, store=None, reading=True) -> Resolved`` picks, in order:

1. ``--store PATH``: the embedded (chdb) store at PATH;
2. ``POA_STORE_ENGINE=http``: the ClickHouse server of ``POA_CLICKHOUSE_URL``;
3. ``POA_STORE_DIR``: the embedded store there;
4. ``<POA_HOME>/store``, the worker's default, when it exists;
5. for commands that only read: ``<POA_HOME>/demo/store``, the store ``poa demo`` leaves,
   when it exists and the worker's default does not (so ``poa sql`` after ``poa demo``
   reads the demo's ledger instead of an empty store);
6. otherwise ``<POA_HOME>/store``, which a reader refuses (:class:`StoreMissing`): a new
   empty store would only answer "0 rows".

A reader of an embedded store that a running worker serves (its ``<store>.sql.json``
endpoint file names a live process) reads through that worker's read-only HTTP endpoint
(processors/app.py ``serve_sql``), since the worker holds the store. ``poa store`` prints
the choice and why. ``open_store`` turns the common faults (missing,
locked by another process, server unreachable) into one-line :class:`StoreError`\\ s.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from poa_stream.settings import Settings


class StoreError(RuntimeError):
    """A store that cannot be used, in one line."""


class StoreMissing(StoreError):
    pass


@dataclass(frozen=True)
class Resolved:
    settings: Settings
    where: str  # path or URL
    why: str
    exists: bool
    served: str = ""  # "url (pid N)" when a running worker serves this embedded store over HTTP


def _served(settings: Settings, store: Path) -> Settings | None:
    """Settings that read ``store`` through the running worker's read-only HTTP endpoint
    (processors/app.py ``serve_sql``), or None when no live worker serves it."""
    import json
    import os
    f = settings.sql_endpoint_file(store)
    try:
        ep = json.loads(f.read_text())
        os.kill(int(ep["pid"]), 0)  # a crashed worker leaves a stale file: ignore it
    except (OSError, ValueError, KeyError, TypeError):
        return None
    pw = settings.sql_http_password.get_secret_value() if settings.sql_http_password else ""
    return settings.model_copy(update={"store_engine": "http", "clickhouse_url": ep["url"],
                                       "clickhouse_user": ep.get("user", "default"),
                                       "clickhouse_password": type(settings.clickhouse_password)(pw),
                                       "clickhouse_database": ep.get("database", settings.clickhouse_database)})


def _with_server(r: Resolved, reading: bool) -> Resolved:
    if not reading or r.settings.store_engine != "chdb" or not r.exists:
        return r
    s = _served(r.settings, Path(r.where))
    if s is None:
        return r
    return Resolved(s, r.where, r.why, True, f"{s.clickhouse_url} (served read-only by the running worker)")


def resolve(settings: Settings, store: Path | None = None, reading: bool = True) -> Resolved:
    return _with_server(_resolve(settings, store, reading), reading)


def _resolve(settings: Settings, store: Path | None, reading: bool) -> Resolved:
    if store is not None:
        s = settings.model_copy(update={"store_dir": store, "store_engine": "chdb"})
        return Resolved(s, str(store), "--store", store.exists())
    if settings.store_engine == "http":
        return Resolved(settings, settings.clickhouse_url, "POA_STORE_ENGINE=http (POA_CLICKHOUSE_URL)", True)
    if settings.store_dir is not None:
        return Resolved(settings, str(settings.store_dir), "POA_STORE_DIR", settings.store_dir.exists())
    default = settings.home / "store"
    if default.exists():
        return Resolved(settings, str(default), "the worker's default store (<POA_HOME>/store)", True)
    demo = settings.home / "demo" / "store"
    if reading and demo.exists():
        s = settings.model_copy(update={"store_dir": demo})
        return Resolved(s, str(demo), "the store `poa demo` left (<POA_HOME>/demo/store; no worker store yet)", True)
    return Resolved(settings, str(default), "the worker's default store (<POA_HOME>/store)", False)


def open_store(r: Resolved, reading: bool = True):
    """The sink of a resolved store, or a one-line :class:`StoreError`."""
    import logging

    from poa_stream.sinks import open_sink
    logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)  # its own line per failure
    if reading and not r.exists:
        raise StoreMissing(f"no store at {r.where} ({r.why}): run `poa demo` or a worker first, "
                           "or pass --store PATH")
    try:
        sink = open_sink(r.settings)
        if r.settings.store_engine == "http":
            sink.query("SELECT 1")  # fail here, in one line, when the server is unreachable
        return sink
    except StoreError:
        raise
    except Exception as exc:
        msg = first_line(exc)
        raise StoreError(msg if msg.startswith("cannot open the store") else
                         f"cannot open the store {r.where}: {msg}") from exc


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
