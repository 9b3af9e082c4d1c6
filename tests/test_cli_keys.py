"""`poa keys new`, `poa emit --sign`, `--json` filling request_id, one-line Kafka failure."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from poa_stream.streams.events import decode_event
from poa_stream.streams.signing import KeyRegistry


def poa(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "poa_stream.cli", *args], capture_output=True, text=True, timeout=120)


def test_keys_new_then_signed_emit_verifies(tmp_path):
    key = tmp_path / "alice.key"
    out = poa("keys", "new", "--account", "alice", "--out", str(key))
    assert out.returncode == 0, out.stderr
    assert os.stat(key).st_mode & 0o777 == 0o600
    public = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(public) == {"alice"}
    again = poa("keys", "new", "--account", "alice", "--out", str(key))
    assert again.returncode == 1 and "not overwritten" in again.stderr
    ev = json.loads(poa("emit", "contribution", "--contributor", "alice", "--datanet", "dn", "--content", "x y z",
                        "--sign", str(key), "--dry-run").stdout)
    assert ev["signer"] == "alice"
    reg = KeyRegistry(public)
    assert reg.check(decode_event(json.dumps(ev)), "alice") is None
    ev["content"] = "tampered"
    assert reg.check(decode_event(json.dumps(ev)), "alice") is not None


def test_json_usage_gets_a_request_id_like_the_option_form():
    ev = json.loads(poa("emit", "usage", "--json", '{"model_id": "m", "fee": 1, "output": "x"}', "--dry-run").stdout)
    assert ev["request_id"] and ev["event_id"].startswith("u-")


def test_unreachable_kafka_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env_out = subprocess.run([sys.executable, "-m", "poa_stream.cli", "emit", "usage", "--model-id", "m", "--fee", "1",
                              "--output", "x", "--bootstrap", f"127.0.0.1:{port}"], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "POA_CLIENT_TIMEOUT_S": "2"})
    assert env_out.returncode == 1
    assert env_out.stderr.strip().count("\n") == 0 and "unreachable" in env_out.stderr
