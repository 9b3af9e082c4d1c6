"""Kafka security end to end: a local broker started with TLS and SASL listeners
(``POA_KAFKA_LOCAL_SECURITY=all``: a CA and broker certificate generated here with the JDK's
keytool, SASL users for PLAIN and SCRAM), and every client of the one connection
configuration (streams/connection.py) against it: topic creation, the operator client
(kafka-python and aiokafka), the Faust worker with its transactional outbox, the group-lag
helper and the rewards tail. Wrong credentials and an untrusted CA fail; nothing falls
back to PLAINTEXT."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid

import pytest
from support.events_factory import scenario
from support.kafka import local_kafka_settings
from support.worker import WorkerProcess

from poa_stream.client import AsyncClient, Client, ClientError
from poa_stream.kafka_local import LocalKafka
from poa_stream.settings import Settings
from poa_stream.processors.replay import process_all
from poa_stream.streams.admin import create_topics, group_progress
from poa_stream.streams.connection import KafkaConfigError, KafkaConnection
from poa_stream.streams import topics
from poa_stream.streams.producer import produce_records

pytestmark = pytest.mark.kafka


def _free_base(n: int = 5) -> int:
    """A port p with p .. p+n-1 free (the secure broker's listeners sit at fixed offsets)."""
    import random
    rng = random.Random(os.getpid())
    for _ in range(200):
        base = rng.randrange(21000, 39000)
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", p)) == 0:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


@pytest.fixture(scope="module")
def secure_broker(kafka_bootstrap, tmp_path_factory):
    main = LocalKafka(local_kafka_settings())
    if not (main.libs / ".complete").exists():
        if os.environ.get("CI"):
            pytest.fail("no resolved local broker jars for the secure broker")
        pytest.skip("no resolved local broker jars (the tests use an external broker)")
    base = _free_base()
    s = Settings(home=tmp_path_factory.mktemp("secure"), kafka_local_port=base, kafka_local_controller_port=base + 1,
                 kafka_local_security="all", kafka_heap="384m")
    broker = LocalKafka(s)
    broker.libs = main.libs
    broker.start()
    try:
        yield broker, broker.security()
    finally:
        broker.stop()


def env_for(info: dict, protocol: str, mechanism: str | None, password: str | None = None) -> dict[str, str]:
    env = {"POA_KAFKA_BOOTSTRAP": info["listeners"][protocol], "POA_KAFKA_SECURITY_PROTOCOL": protocol}
    if mechanism:
        env.update(POA_KAFKA_SASL_MECHANISM=mechanism, POA_KAFKA_SASL_USERNAME=info["username"],
                   POA_KAFKA_SASL_PASSWORD=password or info["password"])
    if "SSL" in protocol:
        env["POA_KAFKA_SSL_CAFILE"] = info["ssl_cafile"]
    return env


def settings_for(tmp_path, info, protocol, mechanism, password=None, **kw) -> Settings:
    env = env_for(info, protocol, mechanism, password)
    fields = {k[len("POA_"):].lower(): v for k, v in env.items()}
    return Settings(home=tmp_path, **{"client_timeout_s": 10, **fields, **kw})


COMBOS = [("SSL", None), ("SASL_PLAINTEXT", "PLAIN"), ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
          ("SASL_SSL", "PLAIN"), ("SASL_SSL", "SCRAM-SHA-256"), ("SASL_SSL", "SCRAM-SHA-512")]


@pytest.mark.parametrize("protocol,mechanism", COMBOS)
def test_every_client_on_every_protocol(secure_broker, tmp_path, protocol, mechanism):
    _, info = secure_broker
    s = settings_for(tmp_path, info, protocol, mechanism)
    conn = s.kafka()
    assert conn.security_protocol == protocol and "password" not in conn.describe()
    create_topics(conn, 2)  # the first combination creates them, with credentials
    with Client(settings=s) as c:  # kafka-python
        d = c.usage(model_id="m-sec", fee=5, output=f"over {protocol}", request_id=f"r-{protocol}-{mechanism}")
    assert d.offset >= 0

    async def send_async():
        async with AsyncClient(settings=s) as c:  # aiokafka
            return await c.usage(model_id="m-sec", fee=6, output="async", request_id=f"a-{protocol}-{mechanism}")
    assert asyncio.run(send_async()).offset >= 0
    parts = group_progress(conn, "poa-sec-nobody")
    assert parts and sum(p.end for p in parts) >= 2


def test_wrong_credentials_and_untrusted_ca_fail(secure_broker, tmp_path):
    _, info = secure_broker
    bad = settings_for(tmp_path, info, "SASL_SSL", "SCRAM-SHA-512", password="not-the-password", client_timeout_s=4)
    with pytest.raises(ClientError):
        with Client(settings=bad) as c:
            c.usage(model_id="m-sec", fee=1, output="x", request_id="r-bad")
    # the system CAs do not trust the local CA: TLS verification is on, not skipped
    untrusted = Settings(home=tmp_path, kafka_bootstrap=info["listeners"]["SSL"], kafka_security_protocol="SSL",
                         client_timeout_s=4)
    with pytest.raises(ClientError):
        with Client(settings=untrusted) as c:
            c.usage(model_id="m-sec", fee=1, output="x", request_id="r-ca")
    # SASL without a user is refused before connecting, naming the setting
    with pytest.raises(KafkaConfigError, match="POA_KAFKA_SASL_USERNAME"):
        Settings(home=tmp_path, kafka_security_protocol="SASL_SSL").kafka()
    with pytest.raises(KafkaConfigError, match="expected one of"):
        KafkaConnection(bootstrap="x:1", security_protocol="TLS")


def _drop_topics(plaintext_bootstrap: str) -> None:
    import time

    from kafka import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=plaintext_bootstrap)
    try:
        present = [t for t in admin.list_topics() if t in topics.ALL_TOPICS]
        if present:
            admin.delete_topics(present)
        deadline = time.monotonic() + 60
        while set(admin.list_topics()) & set(topics.ALL_TOPICS):
            assert time.monotonic() < deadline, "topics were not deleted"
            time.sleep(0.3)
    finally:
        admin.close()


def test_worker_scenario_over_sasl_ssl_scram(secure_broker, tmp_path, settings):
    """`poa topics create`, the Faust worker (consumer, producer, transactional outbox, group
    lag) and `poa rewards tail`, all over SASL_SSL with SCRAM-SHA-512: the ledger equals the
    offline replay and the reward stream sums to it."""
    broker, info = secure_broker
    _drop_topics(broker.bootstrap)  # earlier tests here wrote usage events: start from no topics
    env = env_for(info, "SASL_SSL", "SCRAM-SHA-512")
    run_env = {**os.environ, **env}
    out = subprocess.run([sys.executable, "-m", "poa_stream.cli", "topics", "create"], env=run_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "created topics" in out.stdout, out.stderr
    conn = settings_for(tmp_path, info, "SASL_SSL", "SCRAM-SHA-512").kafka()
    assert create_topics(conn, 3) == []  # all there, with their partition counts
    counts = {p.topic: 0 for p in group_progress(conn, "nobody", topics.ALL_TOPICS)}
    for p in group_progress(conn, "nobody", topics.ALL_TOPICS):
        counts[p.topic] += 1
    assert counts == {t: topics.partitions_for(t, 3) for t in topics.ALL_TOPICS}

    records = scenario()
    expected = process_all(settings, records)[1]
    produce_records(conn, records)
    store = tmp_path / "store"
    w = WorkerProcess(tmp_path / "w", POA_STORE_DIR=str(store), POA_WORKER_ID="poa-sec-" + uuid.uuid4().hex[:8],
                      POA_SQL_HTTP_ENABLED="false", **env).start()
    n_events = len(expected.rows["events"])
    try:
        w.wait_until(lambda: w.status().get("processed", 0) >= n_events and w.status().get("buffered") == 0,
                     timeout_s=240, what=f"{n_events} processed events over SASL_SSL")
    finally:
        assert w.stop() == 0, w.log_tail()
    log = (tmp_path / "w" / "worker.log").read_text(errors="replace")
    assert "over SASL_SSL as poa (SCRAM-SHA-512)" in log and info["password"] not in log
    want: dict[str, int] = {}
    for r in expected.rows["reward_ledger"]:
        want[r["account"]] = want.get(r["account"], 0) + r["amount"]
    for account in sorted(want, key=want.get)[-2:]:  # the outbox published the credits, the tail reads them
        out = subprocess.run([sys.executable, "-m", "poa_stream.cli", "rewards", "tail", "--account", account,
                              "--no-follow", "--json"], env=run_env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        credits = [json.loads(line) for line in out.stdout.splitlines()]
        assert sum(c["amount"] for c in credits) == want[account]
    lag = group_progress(conn, w.env["POA_WORKER_ID"])
    assert lag and sum(p.lag for p in lag) == 0
