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


# ---------------------------------------------------------------- partitions that join later
Q = ("poa.usage", 3)  # a partition the topic gained after the merge began


def live_with_a_joiner(per_source: dict, q_items: list[Envelope], R: random.Random,
                       restart_sink=None) -> tuple[list, dict]:
    """The owner's view when ``Q`` joins: the members' envelopes arrive interleaved at
    random, Q's items arrive from a random point on; when Q first shows up pending, the
    owner appends its join marker at ``join_time()`` to Q's log (a producer may have
    written more before it lands). Offsets of Q are given in arrival order, so the log Q
    ends with is exactly what arrived. With ``restart_sink``, the merge is stored and
    restored from it right after the marker was appended. Returns (released, the final
    per-source log with Q and its marker, how many were released before Q showed up)."""
    m = Merge()
    m.begin(per_source.keys())
    queues = {s: list(v) for s, v in per_source.items()}
    q_queue, q_log, start_q = list(q_items), [], R.randint(0, sum(map(len, per_source.values())))
    released, arrived, marker_sent, cut = [], 0, False, 0
    while any(queues.values()) or q_queue:
        choices = [s for s in queues if queues[s]] + ([Q] if q_queue and arrived >= start_q else [])
        if not choices:
            choices = [Q]
        s = R.choice(choices)
        if s == Q:
            e = q_queue.pop(0)
            e = Envelope(*Q, len(q_log), e.raw, e.record_ts_ms, e.etype, e.event_id, e.ts, e.tick, e.join)
            q_log.append(e)
        else:
            e = queues[s].pop(0)
        arrived += 1
        m.accept(e)
        for h in m.ready():
            released.append(h)
            m.done(h, len(released))
        if m.pending and not marker_sent:
            assert m.watermark() is None  # nothing is released while a source waits to join
            marker_sent, cut = True, len(released)
            at = R.randint(0, len(q_queue))  # more of Q's input lands before the marker
            q_queue.insert(at, Envelope(*Q, -1, b"", tick=m.join_time(), join=True))
            if restart_sink is not None:
                restart_sink.write({"merge_log": m.take_rows()})
                m = Merge()
                m.restore(*restart_sink.load_merge())
                assert m.pending and Q not in m.sources
    for s in [*per_source, Q]:  # the end of the log: every source ticked
        m.accept(Envelope(s[0], s[1], 10 ** 9, b"", tick=FAR))
        released.extend(m.ready())
    assert not m.heap and not m.pending
    return released, {**per_source, Q: q_log}, cut


def q_events(R: random.Random, n: int = 12) -> list[Envelope]:
    """Q's input: event times spread over the members' range, so some are earlier than
    what the members released before Q showed up."""
    return [Envelope(*Q, -1, b"{}", 5_000 + i, "usage", f"q{i}", T0 + timedelta(seconds=R.randint(-60, 400)))
            for i in range(n)]


@hsettings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_a_partition_that_joins_later_is_merged_as_the_offline_merge_of_its_log(log_seed, order_seed):
    """Whatever the interleaving, when Q appears and wherever its marker lands, the live
    order equals the offline merge of the log as it ended (Q with its join marker), and
    every message of Q sorts after what was released before Q joined."""
    R = random.Random(order_seed)
    per_source = log_of(log_seed, n=20)
    released, final, cut = live_with_a_joiner(per_source, q_events(R), R)
    assert released == merged_order(final)
    marker = next(e for e in final[Q] if e.join)
    assert all(h.t < marker.tick and (h.topic, h.partition) != Q for h in released[:cut])
    assert all(h.t >= marker.tick for h in released if (h.topic, h.partition) == Q)


def test_a_join_is_what_keeps_a_late_partition_from_reordering_the_released_past():
    """Without the join rule (Q a member from the start, as before), Q's early event would
    sort before messages already released: the live order could not equal the log's."""
    a, b = ("poa.usage", 0), ("poa.usage", 1)
    per = {a: [Envelope(*a, 0, b"{}", None, "usage", "a0", T0 + timedelta(seconds=10)),
               Envelope(*a, 1, b"{}", None, "usage", "a1", T0 + timedelta(seconds=40))],
           b: [Envelope(*b, 0, b"{}", None, "usage", "b0", T0 + timedelta(seconds=20)),
               Envelope(*b, 1, b"{}", None, "usage", "b1", T0 + timedelta(seconds=50))]}
    m = Merge()
    m.begin(per)
    for e in (per[a][0], per[b][0], per[a][1], per[b][1]):
        m.accept(e)
    assert [h.key for h in m.ready()] == ["a0", "b0"]  # released before Q exists
    early = Envelope(*Q, 0, b"{}", None, "usage", "q0", T0 + timedelta(seconds=5))
    m.accept(early)
    assert m.pending == {Q: [early]} and list(m.ready()) == []
    J = m.join_time()
    assert J == T0 + timedelta(seconds=40)
    marker = Envelope(*Q, 1, b"", tick=J, join=True)
    m.accept(marker)
    assert not m.pending and Q in m.sources and m.joined == 1
    for s in (a, b, Q):
        m.accept(Envelope(*s, 10 ** 9, b"", tick=FAR))
    live = ["a0", "b0", *[h.key for h in m.ready()]]
    assert live == ["a0", "b0", "a1", "q0", "b1"]  # q0 at J = 40 (a1 first: 'a1' < 'q0'), b1 at 50
    log = {**per, Q: [early, marker]}
    assert [h.key for h in merged_order(log)] == live
    as_member = Merge([a, b, Q])  # the old rule: Q a member from the start
    for s, envs in log.items():
        for e in envs:
            as_member.accept(Envelope(e.topic, e.partition, e.offset, e.raw, e.record_ts_ms, e.etype,
                                      e.event_id, e.ts, e.tick))
    assert [h.key for h in as_member.drain()][0] == "q0"  # would have gone before a0: not what was released


def test_a_join_survives_a_restart_of_the_owner(sink):
    """The owner is replaced while Q waits for its marker: the pending messages come back
    from ``merge_log`` and the new owner's order is the offline merge of the final log."""
    for seed in range(5):
        R = random.Random(seed)
        released, final, _ = live_with_a_joiner(log_of(seed, n=15), q_events(R, 8), R, restart_sink=sink)
        assert released == merged_order(final)
        sink.command(f"TRUNCATE TABLE {sink.database}.merge_log")


def test_members_and_tick_frontiers_are_stored(sink):
    """Member rows say which sources the merge began with (a later one must join), and a
    tick's frontier is stored: a restart resumes it, not the last message's."""
    a, b = ("poa.usage", 0), ("poa.usage", 1)
    m = Merge()
    m.begin([a, b])
    m.accept(Envelope(*a, 0, b"{}", None, "usage", "a0", T0))
    m.accept(Envelope(*a, 1, b"", tick=T0 + timedelta(seconds=99)))
    sink.write({"merge_log": m.take_rows()})
    m2 = Merge()
    m2.restore(*sink.load_merge())
    assert m2.sources == {a, b} and m2.frontier[a] == T0 + timedelta(seconds=99) and m2.hi[a] == 1
    late = Envelope(*a, 2, b"{}", None, "usage", "late", T0 + timedelta(seconds=1))
    m2.accept(late)  # placed at the tick's frontier, as the uninterrupted merge places it
    assert [h.t for h in m2.heap if h.key == "late"] == [T0 + timedelta(seconds=99)]
    m3 = Merge()
    m3.restore(*sink.load_merge())
    m3.accept(Envelope(*("poa.usage", 7), 0, b"{}", None, "usage", "x", T0))  # not a member: joins
    assert ("poa.usage", 7) in m3.pending and m3.watermark() is None


def test_join_markers_round_trip_through_intake():
    env = envelope("poa.usage", 3, 9, b"", 1.0, [("poa-tick", b"2026-03-01T00:00:00+00:00"), ("poa-join", b"1")])
    assert env.tick == T0 and env.join and Envelope.decode(env.encode()) == env
    plain = envelope("poa.usage", 3, 10, b"", 1.0, [("poa-tick", b"2026-03-01T00:00:00+00:00")])
    assert not plain.join and b'"j"' not in plain.encode()
