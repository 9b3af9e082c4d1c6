"""Signed events with real ed25519 keys, through the processing core."""
import json

import pytest
from nacl.signing import SigningKey

from poa_stream.processors.core import Core
from poa_stream.processors.replay import step
from poa_stream.streams.events import decode_event
from poa_stream.streams.signing import KeyRegistry, sign_event

ALICE = SigningKey(b"\x01" * 32)
MALLORY = SigningKey(b"\x02" * 32)
EVENT = {"event_id": "e1", "type": "contribution", "ts": "2026-01-01T00:00:00Z", "contribution_id": "alice:c1",
         "contributor": "alice", "datanet": "d", "kind": "dataset", "content": "Grüße aus Köln"}


@pytest.fixture
def keys_file(tmp_path):
    p = tmp_path / "keys.json"
    p.write_text(json.dumps({"alice": ALICE.verify_key.encode().hex()}))
    return p


def run(settings, events):
    core = Core(settings)
    out = []
    for ev in events:
        res = step(core, "poa.contributions", json.dumps(ev).encode())
        res.extend(core.release(None))
        out.append(res)
    return core, out


def test_registry_checks(keys_file):
    reg = KeyRegistry.from_file(keys_file)
    good = decode_event(json.dumps(sign_event(EVENT, "alice", ALICE)))
    assert reg.check(good, "alice") is None
    forged = decode_event(json.dumps(sign_event(EVENT, "alice", MALLORY)))
    assert reg.check(forged, "alice") == "bad signature for 'alice'"
    tampered = decode_event(json.dumps({**sign_event(EVENT, "alice", ALICE), "content": "changed"}))
    assert reg.check(tampered, "alice") == "bad signature for 'alice'"
    assert "unsigned event" in reg.check(decode_event(json.dumps(EVENT)), "alice")
    assert reg.check(decode_event(json.dumps(EVENT)), "bob") is None  # no key registered


def test_enforcement_dead_letters_forgeries(settings, keys_file):
    s = settings.model_copy(update={"keys_file": keys_file, "require_signatures": True})
    forged = sign_event(EVENT, "alice", MALLORY)
    unsigned = {**EVENT, "event_id": "e2", "contribution_id": "alice:c2"}
    good = sign_event({**EVENT, "event_id": "e3", "contribution_id": "alice:c3"}, "alice", ALICE)
    core, out = run(s, [forged, unsigned, good])
    reasons = [r["reason"] for res in out for r in res.rows.get("deadletter", [])]
    assert reasons == ["bad signature for 'alice'", "unsigned event from 'alice', which has a registered key"]
    assert list(core.contribs) == ["alice:c3"]


def test_enforcement_off_accepts_everything(settings, keys_file):
    s = settings.model_copy(update={"keys_file": keys_file})
    core, _ = run(s, [sign_event(EVENT, "alice", MALLORY)])
    assert list(core.contribs) == ["alice:c1"]


def test_bad_keys_file_is_a_clear_error(tmp_path):
    p = tmp_path / "k.json"
    p.write_text(json.dumps({"alice": "zz"}))
    with pytest.raises(ValueError, match="not a hex ed25519 public key"):
        KeyRegistry.from_file(p)
