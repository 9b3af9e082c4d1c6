"""The core's error boundary: a handler that raises quarantines its event (dead letter with
the reason, payload kept, ``seq`` continuous) and leaves the state exactly as if the event
had never been applied, so one poison event neither loses others nor stalls the pipeline."""
from __future__ import annotations

import json

import pytest
from support.events_factory import scenario, usage

from poa_stream.processors import failpoints
from poa_stream.processors.core import Core
from poa_stream.processors.replay import process_all, replay, restore
from poa_stream.sinks.lease import Lease

LEDGER = ("entry_id", "epoch", "account", "role", "source", "amount", "ref_event_id")


@pytest.fixture
def fail_on():
    added: list[tuple[str, str]] = []

    def arm(*event_ids: str) -> None:
        for e in event_ids:
            failpoints.ACTIVE.add(("apply", e))
            added.append(("apply", e))
    yield arm
    for a in added:
        failpoints.ACTIVE.discard(a)


def ledger(rows) -> list[tuple]:
    return sorted(tuple(r[k] for k in LEDGER) for r in rows)


def without(records, *event_ids):
    return [(t, r) for t, r in records if not any(f'"event_id": "{e}"'.encode() in r for e in event_ids)]


def final_contribs(core: Core) -> dict:
    return {cid: (c.status, c.duplicate_of, sorted(c.voters)) for cid, c in core.contribs.items()}


# one poison event of each type; e9 (model m-ft) leaves e8 (a usage of m-ft) waiting in both runs
@pytest.mark.parametrize("poison", [["e4"], ["e6"], ["e9"], ["e11"], ["e2", "e5", "e12"], ["e1", "e10"]])
def test_a_failing_handler_quarantines_its_event_and_nothing_else_changes(settings, fail_on, poison):
    clean_core, clean = process_all(settings, without(scenario(), *poison))
    fail_on(*poison)
    core, out = process_all(settings, scenario())
    assert ledger(out.rows.get("reward_ledger", [])) == ledger(clean.rows.get("reward_ledger", []))
    assert final_contribs(core) == final_contribs(clean_core)
    assert sorted(core._waiting_key) == sorted(clean_core._waiting_key)
    assert core.models.keys() == clean_core.models.keys()
    strip = lambda rows: sorted(json.dumps({k: v for k, v in r.items() if k != "seq"}, default=str)  # noqa: E731
                                for r in rows)
    assert strip(out.rows.get("attributions", [])) == strip(clean.rows.get("attributions", []))
    seqs = [r["seq"] for r in out.rows["events"]]
    assert seqs == list(range(1, len(seqs) + 1))  # continuous
    q = {r["event_id"]: r for r in out.rows["events"] if r["status"] == "quarantined"}
    assert set(q) == {"quarantine:" + e for e in poison}
    dl = {r["event_id"]: r for r in out.rows["deadletter"]}
    for e in poison:
        assert "internal error while applying" in dl[e]["reason"] and "failpoint" in dl[e]["reason"]
        assert json.loads(q["quarantine:" + e]["payload"])["event_id"] == e  # payload kept
    assert core.stats.quarantined == len(poison)


def test_a_waiting_event_that_fails_when_released_is_the_one_quarantined(settings, fail_on):
    """e8 (usage of m-ft) waits; e9 registers m-ft and releases it; e8's handler raises."""
    clean_core, clean = process_all(settings, without(scenario(), "e8"))
    fail_on("e8")
    core, out = process_all(settings, scenario())
    assert "m-ft" in core.models  # e9 itself was applied
    assert ledger(out.rows["reward_ledger"]) == ledger(clean.rows["reward_ledger"])
    assert [r["event_id"] for r in out.rows["events"] if r["status"] == "quarantined"] == ["quarantine:e8"]
    assert not core.waiting


def test_the_fee_that_crashed_the_agent_is_now_refused_by_the_contract(settings):
    """A fee between 2**53 + 1 and 2**62 passed the contract and crashed the split; the
    contract and the split now share one maximum: above it the event is dead-lettered at
    intake, at it the fee splits exactly."""
    from poa_stream.streams.policy import MAX_FEE_MICRO
    records = scenario()[:11] + [
        ("poa.usage", usage("big", "r-big", "m-base", MAX_FEE_MICRO + 1, "x", 8)),
        ("poa.usage", usage("max", "r-max", "m-base", MAX_FEE_MICRO, "x", 8))]
    core, out = process_all(settings, records)
    dl = {r["event_id"]: r["reason"] for r in out.rows["deadletter"]}
    assert f"less than or equal to {MAX_FEE_MICRO}" in dl["big"]
    assert sum(r["amount"] for r in out.rows["reward_ledger"] if r["ref_event_id"] == "max") == MAX_FEE_MICRO
    assert core.stats.quarantined == 0


def test_on_the_store_path_the_log_replays_after_a_quarantine(settings, sink, fail_on):
    """Replay into a store with poison events, then restart from the store: no divergence,
    the same state, and processing goes on exactly like an uninterrupted run."""
    records = scenario()
    clean_core, clean = process_all(settings, without(records, "e6", "e11"))
    Lease(sink, settle_s=0).acquire()
    fail_on("e6", "e11")
    core = Core(settings)
    restore(core, sink)
    replay(records[:12], core, sink, batch_events=5)
    fresh = Core(settings)
    assert restore(fresh, sink) == core.seq  # the rebuilt core reproduces the log
    assert final_contribs(fresh) == final_contribs(core)
    replay(records[12:], fresh, sink)
    _, rows = sink.query(f"SELECT {', '.join(LEDGER)} FROM {sink.database}.reward_ledger")
    assert sorted(rows) == ledger(clean.rows["reward_ledger"])
    _, seqs = sink.query(f"SELECT seq FROM {sink.database}.events ORDER BY seq")
    assert [s for (s,) in seqs] == list(range(1, len(seqs) + 1))
    assert sink.scalar(f"SELECT count() FROM {sink.database}.deadletter WHERE reason LIKE "
                       "'internal error while applying%'") == 2


def test_a_broken_core_is_not_quarantined_event_by_event(settings, monkeypatch):
    """Failures in a row are a bug in the core, not poison: release() raises (the worker stops)."""
    from poa_stream.processors import core as core_mod
    monkeypatch.setattr(core_mod, "MAX_CONSECUTIVE_QUARANTINES", 2)
    c = Core(settings)
    monkeypatch.setattr(Core, "_contribution", lambda self, res, ev: 1 / 0)
    for topic, raw in scenario()[:4]:
        c.process(topic, raw)
    with pytest.raises(RuntimeError, match="in a row failed"):
        c.release(None)


def test_a_dead_letter_before_any_event_is_stamped_at_genesis_not_1970(tmp_path):
    """Rows no event time speaks for take the latest event time, or the policy's genesis
    before any: a report's period never starts in 1970."""
    from poa_stream.settings import Settings
    from poa_stream.processors.replay import process_all
    from poa_stream.streams.policy import Policy
    core, out = process_all(Settings(home=tmp_path), [("poa.usage", b"{not json"), ("poa.usage", b"\xff\xfe")])
    rows = out.rows["deadletter"]
    assert len(rows) == 2 and all(r["ts"] == Policy().genesis_ts for r in rows)
    assert all(r["ts"] == Policy().genesis_ts for r in out.rows["events"])
