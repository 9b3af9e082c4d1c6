"""``poa audit`` (poa/audit.py) on a store the scaled owner wrote mid-run, without Kafka:
the merge and the core run here as the owner runs them, their rows go to a real store, and
the audit compares that store with the offline merge of the same input log. A partition
added while the group runs, whose join marker is not in the log yet, is left out of the
recomputation (the offline merge would take it as a member from the start and report a
difference the store cannot have)."""
from __future__ import annotations

from datetime import datetime, timedelta

from support.events_factory import scenario, usage

from poa_stream.audit import audit
from poa_stream.processors.core import Core, Result
from poa_stream.processors.merge import Envelope, Merge
from poa_stream.processors.replay import feed
from poa_stream.processors.scaled import envelope
from poa_stream.settings import Settings
from poa_stream.sinks.lease import Lease

NEW = ("poa.usage", 1)  # added to poa.usage while the group runs


def input_log() -> dict:
    """The scenario on partition 0 of each topic, each record stamped a minute after its event."""
    log: dict = {}
    for topic, raw in scenario():
        src = (topic, 0)
        offset = len(log.setdefault(src, []))
        env = envelope(topic, 0, offset, raw, None, None)
        rts = (env.ts + timedelta(minutes=1)).timestamp() if env.ts else datetime(2026, 1, 1).timestamp()
        log[src].append(envelope(topic, 0, offset, raw, rts, None))
    early = usage("e-new", "r-new", "m-base", 4_000, "early on the new partition", minute=2)
    log[NEW] = [envelope(*NEW, 0, early, datetime(2026, 1, 1, 0, 3).timestamp(), None)]
    return log


def owner_writes_until_the_new_partition_appears(settings, sink, log) -> Merge:
    """The owner: the members' messages, then the new partition's (held untimed: no marker)."""
    members = {src: envs for src, envs in log.items() if src != NEW}
    core, m, res = Core(settings), Merge(), Result()
    m.begin(members)
    for envs in members.values():
        for e in envs:
            m.accept(e)
    for held in m.ready():
        res.extend(feed(core, held))
        m.done(held, core.seq)
    for e in log[NEW]:
        m.accept(e)
    assert m.pending and not list(m.ready())  # waiting for the join marker
    res.rows["merge_log"] = m.take_rows()
    lease = Lease(sink, owner="owner", settle_s=0)
    lease.acquire()
    sink.write_retrying(res.rows)
    lease.release()
    assert core.seq > 0
    return m


def test_a_partition_joining_without_its_marker_is_left_out(sink, tmp_path):
    settings = Settings(home=tmp_path)
    log = input_log()
    m = owner_writes_until_the_new_partition_appears(settings, sink, log)
    r = audit(settings, sink, log)
    assert r.ok, r.differences
    assert r.joining == [NEW] and r.events == int(sink.scalar(f"SELECT count() FROM {sink.database}.events"))

    # once the owner's join marker is in the log, the partition joins there, in the recomputation too
    marker = Envelope(*NEW, 1, b"", None, tick=m.join_time(), join=True)
    r = audit(settings, sink, {**log, NEW: log[NEW] + [marker]})
    assert r.ok and r.joining == []

    # a member is never left out: its message, changed, is a difference
    changed = {**log, ("poa.usage", 0): [envelope("poa.usage", 0, 0, usage("e-x", "r-x", "m-base", 7, "x", minute=1),
                                                  datetime(2026, 1, 1, 0, 2).timestamp(), None)]
                                         + log[("poa.usage", 0)][1:]}
    r = audit(settings, sink, changed)
    assert not r.ok and r.joining == [NEW]
