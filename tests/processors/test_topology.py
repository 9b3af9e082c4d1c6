"""Which topology ``poa worker`` runs (processors/app.py ``resolve_topology``), on a real
store: ``auto`` (the default) picks the scaled topology's deterministic merge for a new
store or one that holds merge state, and keeps a store the single topology wrote on the
single topology (its buffered events live in ``inbox``, which the scaled one does not read);
an explicit POA_WORKER_TOPOLOGY always wins."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from poa_stream.processors.app import TOPOLOGIES, resolve_topology
from poa_stream.settings import Settings

TS = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _event(sink, seq: int) -> None:
    sink.insert("events", {"seq": [seq], "event_id": [f"e{seq}"], "type": ["usage"], "topic": ["poa.usage"],
                           "ts": [TS], "status": ["processed"], "payload": ["{}"]})


def _merge_row(sink, done: int) -> None:
    sink.insert("merge_log", {"src_topic": ["poa.usage"], "src_partition": [0], "src_offset": [0],
                              "order_us": [0], "rank": [0], "key": ["e1"], "record_ts_ms": [0],
                              "payload": [""], "done": [done], "seq": [1]})


def test_the_default_is_auto():
    assert Settings().worker_topology == "auto" and "auto" in TOPOLOGIES


def test_auto_runs_a_new_store_scaled(sink, tmp_path):
    topology, why = resolve_topology(Settings(home=tmp_path), sink)
    assert topology == "scaled" and "new store" in why
    assert sink.last_seq() == 0  # the schema exists now, nothing else was written


def test_auto_keeps_a_store_the_single_topology_wrote_on_single(sink, tmp_path):
    sink.ensure_schema()
    _event(sink, 1)
    _event(sink, 2)
    topology, why = resolve_topology(Settings(home=tmp_path), sink)
    assert topology == "single" and "2 events without merge state" in why


@pytest.mark.parametrize("done", [0, 1])
def test_auto_runs_a_store_with_merge_state_scaled(sink, tmp_path, done):
    sink.ensure_schema()
    _event(sink, 1)
    _merge_row(sink, done)  # a held message (0) or a processed position (1)
    topology, why = resolve_topology(Settings(home=tmp_path), sink)
    assert topology == "scaled" and "merge state" in why


@pytest.mark.parametrize("chosen", ["single", "scaled"])
def test_an_explicit_topology_wins(sink, tmp_path, chosen):
    sink.ensure_schema()
    _event(sink, 1)  # a single-topology store: auto would say single
    topology, why = resolve_topology(Settings(home=tmp_path, worker_topology=chosen), sink)
    assert topology == chosen and why == f"POA_WORKER_TOPOLOGY={chosen}"


def test_single_on_a_store_with_merge_state_is_refused(sink, tmp_path):
    """The way back would skip input: the scaled intake commits what it forwarded."""
    from poa_stream.processors.app import TopologyRefused
    sink.ensure_schema()
    _event(sink, 1)
    _merge_row(sink, 0)
    with pytest.raises(TopologyRefused, match="merge state"):
        resolve_topology(Settings(home=tmp_path, worker_topology="single"), sink)


def test_the_scaled_owner_processes_what_a_single_worker_left_buffered_first(tmp_path):
    """A store moved from single to scaled: events the single worker accepted (their offsets
    committed) but had not processed yet are in the core's buffer after the restore; the
    first message the merge releases brings them out, in event-time order, before itself."""
    from support.events_factory import LEGAL_DE, contribution, usage

    from poa_stream.processors.core import Core
    from poa_stream.processors.merge import merged_order
    from poa_stream.processors.replay import feed
    from poa_stream.processors.scaled import envelope

    core = Core(Settings(home=tmp_path))
    core.process("poa.contributions", contribution("e1", "c1", "alice", "legal-de", LEGAL_DE, 0), 0, False)
    assert [eid for *_, ev in core.buffer for eid in [ev.event_id]] == ["e1"]
    rts = datetime(2026, 1, 1, 0, 8, tzinfo=timezone.utc).timestamp()
    env = envelope("poa.usage", 0, 0, usage("e2", "r1", "m1", 1000, LEGAL_DE, 7), rts, None)
    [held] = merged_order({("poa.usage", 0): [env]})
    res = feed(core, held)
    assert [r["event_id"] for r in res.rows["events"]] == ["e1", "e2"] and not core.buffer
