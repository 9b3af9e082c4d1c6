"""`poa kafka start|status|stop` against the real local broker."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support.kafka import local_kafka_settings

from poa.kafka_local import LocalKafka

pytestmark = pytest.mark.kafka


def poa(*args, check=False):
    s = local_kafka_settings()
    env = {**os.environ, "POA_HOME": str(s.home), "POA_KAFKA_LOCAL_PORT": str(s.kafka_local_port),
           "POA_KAFKA_LOCAL_CONTROLLER_PORT": str(s.kafka_local_controller_port)}
    return subprocess.run([sys.executable, "-m", "poa.cli", "kafka", *args], capture_output=True,
                          text=True, env=env, timeout=300, check=check)


def test_start_is_idempotent_and_topics_exist(kafka_bootstrap):
    s = local_kafka_settings()
    if kafka_bootstrap != f"127.0.0.1:{s.kafka_local_port}":
        pytest.skip("the tests use an external broker; nothing local to manage")
    broker = LocalKafka(s)
    pid = broker.pid()
    assert pid is not None
    out = poa("start", check=True)
    assert f"running (pid {pid})" in out.stdout  # the same broker, not a second one
    st = poa("status")
    assert st.returncode == 0 and "running" in st.stdout

    from kafka import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(["poa.usage", "poa.models"])}
    finally:
        admin.close()
    assert described == {"poa.usage": s.topic_partitions, "poa.models": 1}


def test_status_of_a_stopped_broker(tmp_path):
    env = {**os.environ, "POA_HOME": str(tmp_path), "POA_KAFKA_LOCAL_PORT": "19999"}
    out = subprocess.run([sys.executable, "-m", "poa.cli", "kafka", "status"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 3 and "stopped" in out.stdout
    stop = subprocess.run([sys.executable, "-m", "poa.cli", "kafka", "stop"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert stop.returncode == 0 and "no local broker was running" in stop.stdout
