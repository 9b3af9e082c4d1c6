"""The deterministic merge (processors/merge.py): whatever the interleaving of the sources,
re-forwarded positions, stale forwarders and a restart from the stored merge log, the
released order is the offline order of the same log; and the intake envelope."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings as hsettings, strategies as st

from poa_stream.processors.merge import Envelope, Merge, merged_order, pack, tick_of
from poa_stream.processors.scaled import envelope
from poa_stream.sinks.base import FatalSinkError

import pytest

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
FAR = datetime(2100, 1, 1, tzinfo=timezone.utc)


def log_of(seed: int, n_sources: int = 3, n: int = 25) -> dict:
    """Per source, envelopes in offset order; event time mostly rising, sometimes late,
    some invalid, some event ids repeated across sources (re-deliveries by producers)."""
    R = random.Random(seed)
    out = {}
    for p in range(n_sources):
        topic = ("poa.usage", "poa.contributions")[p % 2]
        ts, envs = T0, []
        for o in range(n):
            ts += timedelta(seconds=R.randint(-20, 30))
            if R.random() < 0.1:
                envs.append(Envelope(topic, p, o, b"{bad %d" % o, 1_000 + o))
            else:
                eid = f"e{R.randint(0, 3 * n)}" if R.random() < 0.2 else f"e{p}-{o}"
                envs.append(Envelope(topic, p, o, b"{}", 1_000 + o, R.choice(["usage", "contribution", "validation"]),
                                     eid, ts))
        out[(topic, p)] = envs
    return out


def interleave(per_source: dict, R: random.Random, redeliver: float = 0.2) -> list[Envelope]:
    """One arrival order: sources interleaved at random, some positions forwarded again
    later (a retry, a zombie forwarder, a re-read), never out of order per forwarder."""
    queues = {s: list(v) for s, v in per_source.items()}
    out: list[Envelope] = []
    while any(queues.values()):
        s = R.choice([s for s in queues if queues[s]])
        e = queues[s].pop(0)
        out.append(e)
        if R.random() < redeliver:  # a second forwarder replays a few positions of this source
            k = R.randint(1, 4)
            out.extend(x for x in per_source[s] if e.offset - k <= x.offset <= e.offset)
    return out


def run_live(per_source: dict, arrivals: list[Envelope]) -> list:
    m = Merge(per_source.keys())
    released = []
    for e in arrivals:
        m.accept(e)
        released.extend(m.ready())
    for s in per_source:  # the end of the log: the owner ticks every source
        m.accept(Envelope(s[0], s[1], 10 ** 9, b"", tick=FAR))
    released.extend(m.ready())
    assert not m.heap
    return released


@hsettings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_any_interleaving_releases_the_offline_order(log_seed, order_seed):
    per_source = log_of(log_seed)
    want = merged_order(per_source)
    assert run_live(per_source, interleave(per_source, random.Random(order_seed))) == want


def test_a_late_event_sorts_at_its_partition_frontier_and_nothing_overtakes_a_release():
    a, b = ("poa.usage", 0), ("poa.usage", 1)
    late = Envelope(*a, 1, b"{}", None, "usage", "late", T0)  # behind its partition's frontier
    per = {a: [Envelope(*a, 0, b"{}", None, "usage", "a0", T0 + timedelta(seconds=10)), late],
           b: [Envelope(*b, 0, b"{}", None, "usage", "b0", T0 + timedelta(seconds=5)),
               Envelope(*b, 1, b"{}", None, "usage", "b1", T0 + timedelta(seconds=20))]}
    order = [h.key for h in merged_order(per)]
    assert order == ["b0", "a0", "late", "b1"]
    m = Merge(per)
    m.accept(per[b][0])
    m.accept(per[a][0])
    assert list(m.ready()) == []  # b0 is at the watermark: b may still bring an earlier-ranked event
    m.accept(per[b][1])
    assert [h.key for h in m.ready()] == ["b0"]  # a0 (t=10) waits for a to pass 10
    m.accept(late)  # behind a0 in event time, yet placed at a's frontier: after a0
    assert sorted(m.heap)[1].key == "late" and sorted(m.heap)[1].t == T0 + timedelta(seconds=10)
    m.accept(Envelope(*a, 2, b"", tick=T0 + timedelta(seconds=30)))
    assert [h.key for h in m.ready()] == ["a0", "late"]


def test_stale_forwards_are_dropped_by_position_and_a_source_without_data_holds_the_watermark():
    a, b = ("poa.models", 0), ("poa.usage", 2)
    m = Merge([a, b])
    e = Envelope(*a, 5, b"{}", None, "model", "m", T0)
    assert m.accept(e) and not m.accept(e) and m.dropped == 1
    assert not m.accept(Envelope(*a, 3, b"{}", None, "model", "old", T0))  # below the highest seen
    assert m.watermark() is None and list(m.ready()) == []
    t, lagging = m.lagging()
    assert t == T0 + timedelta(microseconds=1) and lagging == [a, b]
    m.accept(Envelope(*b, 0, b"", tick=t))
    m.accept(Envelope(*a, 6, b"", tick=t))
    assert [h.key for h in m.ready()] == ["m"]


def test_restart_from_the_stored_merge_log_continues_the_same_order(sink):
    per_source = log_of(7, n=40)
    want = merged_order(per_source)
    arrivals = interleave(per_source, random.Random(3))
    cut = len(arrivals) // 2
    m = Merge(per_source.keys())
    released = []
    for i, e in enumerate(arrivals[:cut]):
        m.accept(e)
        for h in m.ready():
            released.append(h)
            m.done(h, i + 1)
    sink.write({"merge_log": m.take_rows()})
    # a restart: a fresh merge from the store, then the whole arrival log again (re-reads)
    m2 = Merge(per_source.keys())
    m2.restore(*sink.load_merge())
    assert len(m2.heap) == len(m.heap) and m2.hi == m.hi and m2.frontier == m.frontier
    for e in arrivals:
        m2.accept(e)
        released.extend(m2.ready())
    for s in per_source:
        m2.accept(Envelope(s[0], s[1], 10 ** 9, b"", tick=FAR))
    released.extend(m2.ready())
    assert released == want
    # pruning keeps what a restart needs: each source's offset and frontier, and held rows
    assert sink.prune_merge() > 0
    m3 = Merge(per_source.keys())
    m3.restore(*sink.load_merge())
    assert m3.hi == m.hi and m3.frontier == m.frontier and len(m3.heap) == len(m.heap)


def test_envelopes_round_trip_and_ticks_are_recognised():
    raw = b'{"event_id":"x1","type":"usage","ts":"2026-03-01T00:00:00Z","request_id":"r","model_id":"m",' \
          b'"fee":5,"output":"hello"}'
    env = envelope("poa.usage", 2, 41, raw, 1_700_000_000.123, [])
    assert (env.etype, env.event_id, env.ts, env.record_ts_ms) == ("usage", "x1", T0, 1_700_000_000_123)
    assert Envelope.decode(env.encode()) == env
    bad = envelope("poa.usage", 2, 42, b"\xff not json", None, None)
    assert bad.etype is None and Envelope.decode(bad.encode()) == bad
    tick = envelope("poa.usage", 2, 43, b"", 1.0, [("poa-tick", b"2026-03-01T00:00:00+00:00")])
    assert tick.tick == T0 and tick_of({"poa-tick": b"junk"}) is None and tick_of(None) is None
    with pytest.raises(ValueError):
        Envelope.decode(b'{"v":1}\n')


def test_packed_records_hold_every_envelope_in_order():
    """Intake sends several envelopes per sequence record (pack): every one comes back,
    in order, whatever its payload holds (newlines, JSON, nothing); one larger than the cap
    travels alone; a record of the first v2 form (one envelope, no length) still reads."""
    R = random.Random(5)
    envs = []
    for o in range(300):
        size = R.choice([0, 1, 40, 700, 5000])
        raw = bytes(R.randrange(256) for _ in range(size)).replace(b"x", b"\n")
        envs.append(Envelope("poa.usage", o % 3, o, raw, 1_000 + o, R.choice([None, "usage"]),
                             f"e{o}", T0 + timedelta(seconds=o)))
    envs.append(Envelope("poa.contributions", 1, 7, b"y" * 20_000, None, "contribution", "big", T0))
    records = pack(envs, max_bytes=8_000)
    assert 2 < len(records) < len(envs)
    assert [e for r in records for e in Envelope.decode_all(r)] == envs
    assert any(len(r) > 8_000 and len(Envelope.decode_all(r)) == 1 for r in records)  # alone
    legacy = b'{"v":2,"s":"poa.usage","p":0,"o":3,"r":null,"t":null,"id":null,"ts":null,"tick":null}\nab\ncd'
    assert Envelope.decode_all(legacy) == [Envelope("poa.usage", 0, 3, b"ab\ncd")]
    with pytest.raises(ValueError):
        Envelope.decode_all(envs[3].encode()[:-1] if envs[3].raw else envs[3].encode() + b"junk")


def test_a_store_without_a_lease_refuses_writes_when_one_is_required(sink):
    sink.require_lease = True
    with pytest.raises(FatalSinkError, match="does not own the sequence"):
        sink.write({"merge_log": [{"src_topic": "poa.usage", "src_partition": 0, "src_offset": 0,
                                   "order_us": 0, "rank": 0, "key": "k", "record_ts_ms": -1,
                                   "payload": "", "done": 0, "seq": 0}]})
