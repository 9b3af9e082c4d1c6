"""ClickHouse sinks: one contract (sinks.base.Sink), two engines (chdb embedded, clickhouse-connect)."""
from __future__ import annotations

from poa_stream.settings import Settings
from poa_stream.sinks.base import Sink


def open_sink(settings: Settings) -> Sink:
    """The sink chosen by settings: ``chdb`` (embedded, default) or ``http`` (a ClickHouse server)."""
    if settings.store_engine == "http":
        from poa_stream.sinks.http_sink import HttpSink
        return HttpSink.from_settings(settings)
    from poa_stream.sinks.chdb_sink import ChdbSink
    return ChdbSink(settings.store_path, settings.clickhouse_database)
