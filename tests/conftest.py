"""Shared fixtures: the real Kafka broker, one chdb engine per test process, its HTTP face.

- ``kafka_bootstrap``: the broker in ``POA_TEST_KAFKA_BOOTSTRAP`` (``.ci/run`` starts one
  with ``poa kafka start``), else a local broker started here for the session. Without
  Java/Maven the Kafka tests skip, except under CI (``CI=true``), where they fail.
- ``chdb_path``: chdb runs one engine per process, so every test shares one data path
  and gets a database of its own (``sink`` fixture).
- ``ch_http``: that engine served over ClickHouse's HTTP protocol (tests/support/ch_http.py),
  the real clickhouse-connect path.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from poa_stream.settings import Settings
from support.kafka import local_kafka_settings


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def database() -> str:
    return "t_" + uuid.uuid4().hex[:12]


@pytest.fixture
def sink(chdb_path, database):
    from poa_stream.sinks.chdb_sink import ChdbSink
    s = ChdbSink(chdb_path, database)
    s.ensure_schema()
    yield s
    s.close()


@pytest.fixture(scope="session")
def ch_http(chdb_path):
    from poa_stream.sinks.ch_http import ChdbHttpServer
    with ChdbHttpServer(str(chdb_path)) as server:
        yield server


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> str:
    from poa_stream.kafka_local import KafkaSetupError, LocalKafka, missing_tools
    configured = os.environ.get("POA_TEST_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    if missing := missing_tools():
        msg = f"{' and '.join(missing)} missing: cannot start the Kafka broker"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    broker = LocalKafka(local_kafka_settings())
    started = not broker.status().running
    try:
        broker.start()
    except KafkaSetupError as exc:
        pytest.fail(str(exc))
    yield broker.bootstrap
    if started:
        broker.stop()
