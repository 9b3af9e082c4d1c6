"""SeenIds: exact membership and values across compaction, in bounded memory."""
from __future__ import annotations

from hypothesis import given, settings as hsettings, strategies as st

from poa_stream.scenario import generate
from poa_stream.processors.replay import process_all
from poa_stream.processors.seen import SeenIds


@hsettings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.text(min_size=1, max_size=6), st.one_of(st.none(), st.integers(0, 2**64 - 2))),
                    max_size=300),
       probes=st.lists(st.text(min_size=1, max_size=6), max_size=50))
def test_matches_a_dict_across_compactions(ops, probes):
    ids, ref = SeenIds(min_recent=7), {}
    for i, (key, value) in enumerate(ops):
        ids.add(key, value)
        if ref.get(key) is None:
            ref[key] = value
        if i % 5 == 0:
            ids.compact(keep={k for k, _ in ops[i:i + 3]})
    for key in list(ref) + probes:
        assert (key in ids) == (key in ref)
        assert ids.get(key) == ref.get(key)
    assert len(ids) == len(ref)


def test_compaction_is_bounded_and_keeps_what_must_stay_recent():
    ids = SeenIds(min_recent=1000)
    for i in range(50_000):
        ids.add(f"event-{i}", i)
        if i % 997 == 0:
            ids.compact(keep={"event-5"})
    assert "event-5" in ids.recent and len(ids.recent) < 50_000 // 4
    assert ids.nbytes <= 24 * 50_000
    assert all(ids.get(f"event-{i}") == i for i in range(0, 50_000, 371))
    assert "event-50000" not in ids
    assert "event-5" not in ids.without({"event-5"}) and "event-6" in ids.without({"event-5"})


def test_a_core_with_tiny_compaction_makes_the_same_ledger(settings):
    """Re-deliveries and conflicts are judged the same when the ids are compacted often."""
    recs = [(t, line.encode()) for t, line in generate(seed=9, scale=0.4).records]
    recs += recs[::7]  # re-deliveries of every seventh message, at the end
    ref_core, ref = process_all(settings, recs)
    import poa_stream.processors.core as core_mod
    orig = core_mod.SeenIds
    core_mod.SeenIds = lambda: orig(min_recent=16)
    try:
        from poa_stream.processors.core import Core
        from poa_stream.processors.replay import step
        core = Core(settings)
        out = []
        for i, (t, raw) in enumerate(recs):
            r = step(core, t, raw, core.P.order_lateness_s)
            out += r.rows.get("reward_ledger", []) + r.rows.get("events", [])
            core.compact_ids()
        r = core.release(None)
        out += r.rows.get("reward_ledger", []) + r.rows.get("events", [])
    finally:
        core_mod.SeenIds = orig
    assert core.ids.nbytes > 0 and len(core.ids.recent) < len(core.ids)
    key = lambda r: r.get("entry_id") or r["event_id"]
    assert sorted(map(key, out)) == sorted(map(key, ref.rows["reward_ledger"] + ref.rows["events"]))
    assert core.stats.redelivered == ref_core.stats.redelivered > len(recs[::7]) // 2
