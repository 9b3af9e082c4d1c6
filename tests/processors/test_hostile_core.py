"""Hostile input cannot bend the ledger: time, numbers, cost, waiting and identity attacks
through the processing core (the replay path, and ``Core.process`` with Kafka record
timestamps as the worker calls it). Each test is an attack that worked on the code before
these bounds."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
from nacl.signing import SigningKey
from support.events_factory import LEGAL_DE, contribution, model, raw, scenario, usage, validation

from poa_stream.emit import usage_event
from poa_stream.processors.core import Core
from poa_stream.processors.replay import process_all, replay_into
from poa_stream.streams.policy import MAX_FEE_MICRO, MAX_INFLUENCE
from poa_stream.streams.signing import sign_event

C, V, M, U = "poa.contributions", "poa.validations", "poa.models", "poa.usage"
NOW = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)


def at(record: bytes, ts: str) -> bytes:
    obj = json.loads(record)
    obj["ts"] = ts
    return raw(obj)


def dead(out) -> dict[str, str]:
    return {r["event_id"]: r["reason"] for r in out.rows.get("deadletter", [])}


# ----------------------------------------------------------------------------- time
def test_a_far_future_event_in_a_replay_is_dead_lettered_and_moves_nothing(settings):
    records = scenario()
    attack = records[:5] + [(C, at(contribution("x2099", "cx", "eve", "legal-de", "future " * 20), "2099-01-01T00:00:00Z"))] + records[5:]
    core, out = process_all(settings, attack)
    _, clean = process_all(settings, records)
    assert "after the latest event time of the stream" in dead(out)["x2099"]
    assert out.rows.get("epochs", []) == clean.rows.get("epochs", [])  # no epoch closed by 2099
    assert core.book.open == 20454


def test_worker_bounds_event_time_by_the_record_timestamp(settings):
    core = Core(settings)
    for eid, ts in [("y2099", "2099-01-01T00:00:00Z"), ("y9999", "9999-12-31T00:00:00Z"),
                    ("y1970", "1970-01-01T00:00:00Z"), ("y1969", "1969-12-31T23:00:00Z")]:
        res = core.process(C, at(contribution(eid, "c" + eid, "eve", "d", "x y z " * 5), ts), record_ts=NOW)
        reason = res.rows["deadletter"][0]["reason"]
        assert ("after its Kafka record's timestamp" in reason if ts > "2026" else "before the genesis" in reason)
    ok = core.process(C, at(contribution("fine", "cf", "eve", "d", "x y z " * 5), "2026-01-01T12:30:00Z"),
                      record_ts=NOW)
    assert not ok.rows and "fine" in core.buffered
    assert core.book.open is None and not core.release(None).rows.get("epochs")  # nothing closed


def test_the_emission_schedule_starts_at_genesis_not_at_the_first_event(settings):
    later = [(C, at(contribution("a1", "c1", "alice", "d", LEGAL_DE), "2026-03-01T00:00:00Z")),
             (U, at(usage("u1", "r1", "m", 10, LEGAL_DE), "2026-03-02T00:00:00Z")),
             (M, at(model("m1", "m", "op", ["d"]), "2026-03-01T00:01:00Z"))]
    core, out = process_all(settings, later)
    e = out.rows["epochs"][0]
    k = e["epoch"] - 20454  # epochs since 2026-01-01, the policy's genesis
    assert k == 59 and e["budget"] == int(core.P.emission_per_epoch_micro * 0.99 ** k)


def test_duplicates_and_a_stale_event_cannot_hold_the_watermark(settings):
    s = settings.model_copy(update={"policy_file": None})
    core = Core(s)
    stall = core.P.order_stall_messages
    core.process(U, usage("fresh", "rf", "m", 1, "x", minute=180), partition=0, caught_up=False)
    stale = usage("stale", "rs", "m", 1, "x", minute=1)
    core.process(U, stale, partition=1, caught_up=False)
    assert core.marks.value() == datetime(2026, 1, 1, 0, 1, tzinfo=timezone.utc)
    for _ in range(stall - 1):  # a flood of its own re-deliveries: no progress
        core.process(U, stale, partition=1, caught_up=False)
    assert core.marks.value() == datetime(2026, 1, 1, 0, 1, tzinfo=timezone.utc)  # a crash's
    core.process(U, stale, partition=1, caught_up=False)  # re-deliveries are not a flood yet
    assert core.marks.value() == datetime(2026, 1, 1, 3, 0, tzinfo=timezone.utc)


# ----------------------------------------------------------------------------- numbers
def test_one_maximum_fee_for_contract_emit_and_split(settings):
    import pytest
    from poa_stream.streams.events import EventError
    with pytest.raises(EventError, match=str(MAX_FEE_MICRO)):
        usage_event(model_id="m", fee=MAX_FEE_MICRO + 1, output="x", request_id="r")
    records = scenario()[:11] + [(U, usage("max", "rmax", "m-base", MAX_FEE_MICRO, LEGAL_DE, 8))]
    _, out = process_all(settings, records)
    assert sum(r["amount"] for r in out.rows["reward_ledger"] if r["ref_event_id"] == "max") == MAX_FEE_MICRO


# ----------------------------------------------------------------------------- cost
def test_influence_lists_are_capped_and_linear(settings):
    big = [{"contribution_id": f"c{i}", "score": 1.0} for i in range(MAX_INFLUENCE + 1)]
    core, out = process_all(settings, scenario()[:11] + [
        (U, usage("inf", "rinf", "m-base", 100, LEGAL_DE, 8, influence=big)),
        (U, usage("inf2", "rinf2", "m-base", 100, LEGAL_DE, 8, influence=big[:MAX_INFLUENCE]))])
    assert "at most 1024 items" in dead(out)["inf"]
    assert sum(r["amount"] for r in out.rows["reward_ledger"] if r["ref_event_id"] == "inf2") == 100


def test_a_repetitive_megabyte_pair_costs_a_bounded_amount_of_work(settings):
    """Before the caps, a 32k x 32k-word repetitive pair took 3.9 s and +1 GB, and a 1 MiB pair
    OOM-killed the worker. The kernel's work is now bounded by the policy's budget."""
    from poa_stream.attribution.spans import SpanIndex, allowed_mask_from
    from poa_stream.attribution.text import token_hashes
    words = " ".join(f"tok{i % 97:03d}" for i in range(149_000))  # ~1 MiB, period 97 words
    assert 1_000_000 < len(words.encode()) <= 1 << 20
    toks = token_hashes(words)
    P = Core(settings).P
    idx = SpanIndex(P.span_min_tokens)
    idx.add(0, toks)
    docs, w, matched = idx.attribute(toks, allowed_mask_from([0], 1), P.span_max_occurrences,
                                     P.span_work_budget)
    m, occ = toks.shape[0], P.span_max_occurrences
    # probes and chain steps are at most ~m * occ; comparisons at most the budget + one extension
    assert idx.last_work <= m * (occ + 8) + P.span_work_budget + m + 64
    assert docs.tolist() == [0] and matched > 0  # still attributed, from what the budget covered
    # and through the whole core: the usage is split exactly, whatever the evidence
    records = [(C, contribution("big", "cbig", "alice", "d", words)),
               (M, model("m", "m1", "op", ["d"])),
               (U, usage("u", "r", "m1", 1_000, words))]
    core, out = process_all(settings, records)
    assert sum(r["amount"] for r in out.rows["reward_ledger"] if r["source"] == "fee") == 1_000


def test_invalid_payloads_are_stored_truncated(settings):
    core = Core(settings)
    huge = b"{" + b"x" * (5 << 20)
    res = core.process(U, huge)
    stored = res.rows["events"][0]["payload"]
    assert len(stored) < 70_000 and stored.endswith(f"[truncated: {len(huge)} bytes in all]")
    assert len(res.rows["deadletter"][0]["payload"]) < 70_000


# ----------------------------------------------------------------------------- waiting
def test_references_that_never_arrive_expire_after_one_epoch(settings):
    records = [(U, usage("orphan", "ro", "ghost-model", 5, "x", minute=0)),
               (V, validation("vote", "val", "ghost-contribution", minute=0)),
               (C, at(contribution("next", "c1", "a", "d", LEGAL_DE), "2026-01-02T00:30:00Z"))]
    core, out = process_all(settings, records)
    d = dead(out)
    assert "expired: waited more than 86400 s of event time for model ghost-model" in d["orphan"]
    assert "contribution ghost-contribution" in d["vote"]
    assert not core.waiting and core.stats.waiting == 0


def test_self_reference_and_lineage_cycles_are_refused_at_once(settings):
    records = [(M, model("self", "ms", "op", ["d"], base=["ms"])),
               (M, model("a", "ma", "op", ["d"], base=["mb"], method="finetune")),
               (M, model("b", "mb", "op", ["d"], base=["ma"], method="finetune", minute=3))]
    core, out = process_all(settings, records)
    d = dead(out)
    assert "lists itself as a base model" in d["self"]
    assert "closes a lineage cycle: mb -> ma -> mb" in d["b"]


def test_processed_events_leave_the_inbox(settings, sink):
    replay_into(scenario()[:6], settings, sink)
    db = sink.database
    sink.write({"inbox": [{"event_id": "e1", "topic": C, "ts": NOW, "payload": "{}"},
                          {"event_id": "pending", "topic": C, "ts": NOW, "payload": "{}"}]})
    assert sink.prune_inbox() == 1
    _, left = sink.query(f"SELECT event_id FROM {db}.inbox")
    assert left == [("pending",)]


# ----------------------------------------------------------------------------- identity
def test_one_inference_reported_twice_is_billed_once(settings):
    a = usage_event(model_id="m-base", fee=1_000, output=LEGAL_DE, request_id="req-7", ts="2026-01-01T00:09:00Z")
    again = usage_event(model_id="m-base", fee=1_000, output=LEGAL_DE, request_id="req-7", ts="2026-01-01T00:09:00Z")
    assert a["event_id"] == again["event_id"]  # a retried emit is the same event
    other_id = {**a, "event_id": "fresh-id"}  # a report under another event id
    core, out = process_all(settings, scenario()[:11] + [(U, raw(a)), (U, raw(again)), (U, raw(other_id))])
    dups = [e for e, r in dead(out).items() if r.startswith("duplicate report: request_id 'req-7'")]
    assert len(dups) == 1  # whichever comes first in processing order is billed, the other not
    assert sum(r["amount"] for r in out.rows["reward_ledger"] if r["ref_event_id"] in (a["event_id"], "fresh-id")) == 1_000


def test_a_known_event_id_with_another_payload_is_a_conflict(settings):
    first = usage("dup", "r-dup", "m-base", 10, LEGAL_DE, 8)
    higher = usage("dup", "r-dup", "m-base", 10_000_000, LEGAL_DE, 8)
    core, out = process_all(settings, scenario()[:11] + [(U, first), (U, higher), (U, first)])
    assert dead(out)["dup"].startswith("conflict: event id 'dup' was already used")
    assert sum(r["amount"] for r in out.rows["reward_ledger"] if r["ref_event_id"] == "dup") == 10


ALICE, MALLORY = SigningKey(b"\x01" * 32), SigningKey(b"\x02" * 32)


def signed_settings(settings, tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"alice": ALICE.verify_key.encode().hex(),
                                "mallory": MALLORY.verify_key.encode().hex()}))
    return settings.model_copy(update={"keys_file": keys, "require_signatures": True})


def test_a_forgery_cannot_burn_a_genuine_event_id(settings, tmp_path):
    s = signed_settings(settings, tmp_path)
    genuine = sign_event(json.loads(contribution("e-alice", "alice:c1", "alice", "d", LEGAL_DE)), "alice", ALICE)
    forged = {**genuine, "signature": None, "content": "forged"}
    forged.pop("signature")
    core, out = process_all(s, [(C, raw(forged)), (C, raw(genuine))])
    assert "unsigned event from 'alice'" in dead(out)["e-alice"]
    assert core.contribs["alice:c1"].contributor == "alice"
    assert [r for r in out.rows["events"] if r["event_id"] == "e-alice"][0]["status"] == "ok"


def test_a_front_runner_cannot_take_an_owned_id(settings, tmp_path):
    s = signed_settings(settings, tmp_path)
    alice = sign_event(json.loads(contribution("e-a", "alice:c1", "alice", "d", LEGAL_DE, minute=5)), "alice", ALICE)
    steal = raw(json.loads(contribution("e-t", "alice:c1", "trudy", "d", LEGAL_DE + " x", minute=4)))
    keyed_steal = sign_event(json.loads(contribution("e-m", "alice:c1", "mallory", "d", "m " * 9, minute=4)),
                             "mallory", MALLORY)
    unscoped = sign_event(json.loads(contribution("e-m2", "c9", "mallory", "d", "other text " * 9, minute=4)),
                          "mallory", MALLORY)
    vote = validation("v1", "val", "alice:c1", minute=6)
    core, out = process_all(s, [(C, raw(alice)), (C, steal), (C, raw(keyed_steal)), (C, raw(unscoped)),
                                (V, vote)])
    d = dead(out)  # trudy has no key: her event is not checked, but alice's scope is hers
    assert "is scoped to account 'alice', not to 'trudy'" in d["e-t"]
    assert "must start with 'mallory:'" in d["e-m"] and "must start with 'mallory:'" in d["e-m2"]
    c = core.contribs["alice:c1"]
    assert c.contributor == "alice" and "val" in c.voters


def test_a_refused_event_moves_no_epoch(settings, tmp_path):
    """The epoch advance ran before the signature check: a forged event dated days later
    closed epochs (and paid their emissions) before it was dead-lettered."""
    s = signed_settings(settings, tmp_path)
    genuine = sign_event(json.loads(contribution("g1", "alice:c1", "alice", "d", LEGAL_DE)), "alice", ALICE)
    forged = json.loads(contribution("f1", "alice:c2", "alice", "d", "later text " * 9))
    forged["ts"] = "2026-01-05T00:00:00Z"
    dup = json.loads(contribution("f2", "alice:c1", "alice", "d", "x " * 9))  # signed, but a re-registration
    dup["ts"] = "2026-01-06T00:00:00Z"
    dup = sign_event(dup, "alice", ALICE)
    core, out = process_all(s, [(C, raw(genuine)), (C, raw(forged)), (C, raw(dup))])
    d = dead(out)
    assert "unsigned event from 'alice'" in d["f1"] and "already registered" in d["f2"]
    assert not out.rows.get("epochs") and core.book.open == 20454
