"""A batch write that fails part-way, on both engines, at every insert a batch makes.

The batches are a real core run (``process_all`` over a small generated scenario) split by
``seq`` into 8 batches of 48 events, each with the ``inbox`` and ``pipeline_metrics`` rows a
worker batch carries. Each batch is hit by up to two faults (the second on the retry), at
chosen tables, so that across the run every table the worker writes in a batch (each insert
position) fails at least once, in each way an insert can fail: before it reached the store,
or after it landed with its answer lost. Every retry (same key) must send again only what
did not land, and the store must end exactly as a clean write of the same batches into a
fresh database leaves it: same rows in every table (nothing twice), the ledger summing to
the fees, ``recover()`` at the last seq, a core rebuilt from the store's log
(``processors.replay.restore``).

A writer that dies part-way (no retry) is replaced by a new lease generation, which
recovers (orphans above the last committed seq deleted, core rebuilt) and writes what its
core has not logged: the same clean result.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
from support.faults import AFTER, BEFORE, MID, FaultProxy, FaultySink

from poa_stream.sinks.base import FatalSinkError, SinkError
from poa_stream.sinks.ddl import DERIVED_TABLES, TABLES, WRITE_ORDER
from poa_stream.sinks.lease import Lease

SEED, SCALE, BATCH_EVENTS = 3, 0.1, 48
METRICS_TS = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
# a retry skips these once their rows landed (merge_log: the dedup token decides, sinks/ddl.py)
SEQ_TABLES = {t for t in set(DERIVED_TABLES) | {"events"} if TABLES[t].landed_by_seq}
BATCH_TABLES = [t for t in WRITE_ORDER if t != "outbox"]  # outbox is a write of its own
REPLACING = {n for n, t in TABLES.items() if t.engine.startswith("Replacing")}


# ------------------------------------------------------------------------------ data

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(batches, reference rows, reference core) from one real core run."""
    from poa_stream.scenario import generate
    from poa_stream.settings import Settings
    from poa_stream.processors.replay import process_all
    records = [(t, line.encode()) for t, line in generate(seed=SEED, scale=SCALE).records]
    core, out = process_all(Settings(home=tmp_path_factory.mktemp("ref")), records)
    # the scaled topology's merge log: a done row per logged event (its position, its seq)
    out.rows["merge_log"] = [{"src_topic": e["topic"], "src_partition": 0, "src_offset": e["seq"],
                              "order_us": e["seq"], "rank": 0, "key": e["event_id"], "record_ts_ms": -1,
                              "payload": "", "done": 1, "seq": e["seq"]} for e in out.rows["events"]]
    batches = []
    for b, lo in enumerate(range(1, core.seq + 1, BATCH_EVENTS)):
        hi = lo + BATCH_EVENTS - 1
        rows = {t: [r for r in rs if lo <= r["seq"] <= hi] for t, rs in out.rows.items()}
        # events received with this batch but released with the next one wait in the inbox
        rows["inbox"] = [{k: e[k] for k in ("event_id", "topic", "ts", "payload")} for e in out.rows["events"]
                         if hi < e["seq"] <= hi + 6 and e["type"] != "invalid"]
        rows["pipeline_metrics"] = [{"ts": METRICS_TS, "worker": "w", "topic": "poa.usage", "messages": b,
                                     "deadlettered": 0, "released": len(rows["events"]), "buffered": 0,
                                     "lag": 0, "batch_ms": 1.5, "e2l_p50_ms": 1.0, "e2l_p99_ms": 2.0,
                                     "e2l_max_ms": 3.0}]
        batches.append({t: rs for t, rs in rows.items() if rs})
    return batches, out.rows, core


def plan(batch: dict) -> list[str]:
    """The batch's inserts, in the order write() sends them."""
    return [t for t in WRITE_ORDER if batch.get(t)]


def fault_plan(batches: list[dict], targets: list[tuple[str, str]], per_batch: int) -> list[list[tuple[str, str]]]:
    """Up to ``per_batch`` (table, mode) faults per batch, in the batch's insert order (the
    second hits the retry), covering every target once: the rarest tables first."""
    presence = {t: sum(t in b for b in batches) for t, _ in targets}
    todo = sorted(targets, key=lambda tm: presence[tm[0]])
    out = []
    for batch in batches:
        order, picks = plan(batch), []
        while len(picks) < per_batch:
            after = order.index(picks[-1][0]) if picks else -1
            pick = next((tm for tm in todo if tm[0] in batch and order.index(tm[0]) > after), None)
            if pick is None:
                break
            todo.remove(pick)
            picks.append(pick)
        out.append(picks)
    assert not todo, f"no batch left for the faults {todo}: make the batches smaller"
    return out


# ------------------------------------------------------------------------------ engines

@pytest.fixture(scope="module")
def http_link(ch_http):
    """A FaultProxy that cuts nothing, in front of the tests' ClickHouse HTTP server: the
    HTTP engine's link. (It also spares each query the ~40 ms that delayed ACKs against
    Nagle cost on ch_http's two-write answers.)"""
    with FaultProxy(ch_http.port, cuts={}) as proxy:
        yield proxy
    assert proxy.cut_total == 0 and not proxy.errors, proxy.errors


def open_engine(kind: str, request, database: str, port: int | None = None):
    if kind == "chdb":
        from poa_stream.sinks.chdb_sink import ChdbSink
        return ChdbSink(request.getfixturevalue("chdb_path"), database)
    from poa_stream.sinks.http_sink import HttpSink
    return HttpSink(f"http://127.0.0.1:{port or request.getfixturevalue('http_link').port}", database=database)


class Store:
    """A fresh database on one engine, the writer lease held by a FaultySink around it."""

    def __init__(self, kind: str, request, port: int | None = None):
        self.kind, self.request, self.port = kind, request, port
        self.database = "wf_" + uuid.uuid4().hex[:12]
        self.inner = open_engine(kind, request, self.database, port)
        self.inner.ensure_schema()
        self.sink = FaultySink(self.inner)
        Lease(self.sink, ttl_s=30, settle_s=0).acquire()

    def incarnate(self) -> FaultySink:
        """A new writer on the same store (the old one died): new client, next lease generation,
        batch keys counted from 1 again."""
        self.inner = open_engine(self.kind, self.request, self.database, self.port)
        self.sink = FaultySink(self.inner)
        lease = Lease(self.sink, ttl_s=1e-3, settle_s=0)  # the dead writer's lease has expired
        lease.acquire()
        lease.ttl_s = 30.0  # this writer's own lease: renewed as usual
        return self.sink

    def drop(self) -> None:
        try:
            self.inner.command(f"DROP DATABASE IF EXISTS {self.database} SYNC")
        finally:
            self.inner.close()


def snapshot(sink) -> dict[str, list[tuple]]:
    """Every row of every table, as stored: duplicates kept, except in the ReplacingMergeTree
    tables (contributions, models), which collapse the rows of one key on insert and in
    background merges at times of their own: those are compared as read, with FINAL."""
    out = {}
    for name in TABLES:
        final = " FINAL" if name in REPLACING else ""
        _, rows = sink.query(f"SELECT * FROM {sink.database}.{name}{final} ORDER BY ALL")
        out[name] = rows
    return out


_CLEAN: dict[str, dict] = {}


def clean_snapshot(kind: str, request, run) -> dict[str, list[tuple]]:
    """The store after a clean write of the batches into a fresh database (once per engine)."""
    key = kind
    if key not in _CLEAN:
        batches, ref, _ = run
        st = Store(kind, request)
        try:
            for batch in batches:
                st.sink.write(batch)
            snap = snapshot(st.sink)
        finally:
            st.drop()
        for t in DERIVED_TABLES + ["events"]:
            want = len({r[TABLES[t].order_by] for r in ref.get(t, [])}) if t in REPLACING else len(ref.get(t, []))
            assert len(snap[t]) == want, t
        assert len(snap["inbox"]) == sum(len(b.get("inbox", [])) for b in batches)
        _CLEAN[key] = snap
    return _CLEAN[key]


def check_clean(st: Store, run, clean: dict, what: str) -> None:
    """The store holds exactly the clean write's rows, the ledger adds up, recover() and a
    core rebuilt from the store's log agree with the reference run."""
    _, ref, ref_core = run
    sink, db = st.sink, st.database
    got = snapshot(sink)
    logged = {r[1] for r in got["events"]}
    for name in TABLES:
        if name == "inbox":  # a start prunes the inbox of logged events: compare what waits
            got[name] = [r for r in got[name] if r[0] not in logged]
            clean = {**clean, name: [r for r in clean[name] if r[0] not in logged]}
        if got[name] != clean[name]:
            twice = len(got[name]) - len(set(got[name]))
            raise AssertionError(f"{what}: {name} holds {len(got[name])} rows ({twice} twice), "
                                 f"the clean write {len(clean[name])}")
    fees = sum(u["fee"] for u in ref["usage"])
    _, [(fee_sum, total, dup)] = sink.query(
        f"SELECT sumIf(amount, source = 'fee'), sum(amount), count() - uniqExact(entry_id) FROM {db}.reward_ledger")
    assert (fee_sum, total, dup) == (fees, sum(r["amount"] for r in ref["reward_ledger"]), 0), what
    core = rebuilt_core(st)
    assert sink.recovered == ref_core.seq == core.seq, what


def rebuilt_core(st: Store):
    """What a starting worker does: recover(), then the core rebuilt from the store's log
    (raises 'event log diverged' on a log that is not a run's)."""
    from poa_stream.settings import Settings
    from poa_stream.processors.core import Core
    from poa_stream.processors.replay import restore
    core = Core(Settings(home=st.request.getfixturevalue("tmp_path") / "home"))
    restore(core, st.sink)
    return core


def write_faulted(fs: FaultySink, batch: dict, faults: list[tuple[str, str]]) -> None:
    """Write ``batch`` under one key while its inserts fail as ``faults`` says (one failure per
    attempt, in insert order), retrying until it lands. Every attempt sends the same tokens,
    never again a seq-carrying table whose rows landed, and every table that did not land, in
    order, up to the one that fails."""
    order = plan(batch)
    for table, mode in faults:
        fs.fail_table(table, mode)
    key, landed = fs.next_batch_key(), 0  # order[:landed] is stored
    for attempt, (table, mode) in enumerate(faults + [(None, None)]):
        n0 = len(fs.inserts)
        if table is None:
            fs.write(batch, key, retry=attempt > 0)
            upto = len(order)
        else:
            with pytest.raises(SinkError) as info:
                fs.write(batch, key, retry=attempt > 0)
            assert not isinstance(info.value, FatalSinkError) and f"insert into {table}" in str(info.value)
            upto = order.index(table) + 1
        sent = [(t, tok) for _, t, tok, _ in fs.inserts[n0:]]
        assert all(tok == f"{key}:{t}" for t, tok in sent), sent
        assert not [t for t, _ in sent if t in order[:landed] and t in SEQ_TABLES], (faults, attempt, sent)
        assert [t for t, _ in sent if t not in order[:landed]] == order[landed:upto], (faults, attempt, sent)
        if table is not None:
            landed = upto - (mode == BEFORE)


# ------------------------------------------------------------------------------ tests

@pytest.mark.parametrize("mode", [BEFORE, AFTER])
@pytest.mark.parametrize("kind", ["chdb", "http"])
def test_a_batch_failing_at_any_insert_lands_once_when_retried(kind, mode, request, run):
    """Every table's insert fails (``mode``) in some batch, some batches failing twice (the
    second time on the retry); each batch is retried under its key until it lands; the store
    ends equal to a clean write of the same batches."""
    batches, _, _ = run
    clean = clean_snapshot(kind, request, run)
    faults = fault_plan(batches, [(t, mode) for t in BATCH_TABLES], per_batch=2)
    st = Store(kind, request)
    try:
        for batch, batch_faults in zip(batches, faults):
            write_faulted(st.sink, batch, batch_faults)
        check_clean(st, run, clean, f"{kind}, every insert failing {mode} once: {faults}")
    finally:
        st.drop()


@pytest.mark.parametrize("kind", ["chdb", "http"])
def test_every_insert_of_a_batch_failing_twice_still_lands_once(kind, request, run):
    """In one batch every table's insert fails twice (before reaching the store, then after
    landing): the retry loop (``write_retrying``) keeps the key and the store ends clean."""
    batches, _, _ = run
    big = max(range(len(batches)), key=lambda i: len(plan(batches[i])))
    clean = clean_snapshot(kind, request, run)
    st = Store(kind, request)
    try:
        fs = st.sink
        for i, batch in enumerate(batches):
            if i == big:
                for t in plan(batch):
                    fs.fail_table(t, BEFORE).fail_table(t, AFTER)
                waits: list[float] = []
                n0 = len(fs.inserts)
                key = fs.write_retrying(batch, sleep=waits.append)
                outcomes = [o for _, _, _, o in fs.inserts[n0:]]
                n = len(plan(batch))
                assert outcomes.count(BEFORE) == outcomes.count(AFTER) == n, outcomes
                assert len(waits) == 2 * n and not any(fs._by_table.values())
                assert {tok.rsplit(":", 1)[0] for _, _, tok, _ in fs.inserts[n0:]} == {key}
            else:
                fs.write(batch)
        check_clean(st, run, clean, f"{kind}: every insert of batch {big} failing twice")
    finally:
        st.drop()


@pytest.mark.parametrize("kind", ["chdb", "http"])
def test_a_writer_dying_part_way_is_recovered_by_the_next_generation(kind, request, run):
    """The writer dies at one insert of a batch (no retry, no lease release): after the first
    table landed, half-way, with every table but the commit marker stored, and after the
    ``events`` insert landed (committed, unanswered). The next incarnation (new lease
    generation, batch keys from 1 again) recovers: no derived row above the last committed
    seq is left, its core is rebuilt from the log; it writes the batch again unless its core
    already logged it, leaving out the inbox rows it reloaded and the dead writer's metrics
    row. The store ends equal to the clean one."""
    batches, _, _ = run
    clean = clean_snapshot(kind, request, run)
    crashes = [("contributions", AFTER), ("attributions", BEFORE), ("reward_ledger", AFTER),
               ("events", BEFORE), ("events", AFTER)]
    faults = fault_plan(batches, crashes, per_batch=1)
    st = Store(kind, request)
    db = st.database
    try:
        for batch, batch_faults in zip(batches, faults):
            if not batch_faults:
                st.sink.write(batch)
                continue
            [(table, mode)] = batch_faults
            old = st.sink
            old.fail_table(table, mode)
            with pytest.raises(SinkError):
                old.write(batch)
            old.inner.close()  # the process is gone
            new = st.incarnate()
            assert new.generation == old.generation + 1
            core = rebuilt_core(st)
            committed = max(r["seq"] for r in batch["events"]) if (table, mode) == ("events", AFTER) \
                else min(r["seq"] for r in batch["events"]) - 1
            assert new.recovered == core.seq == committed, (table, mode)
            _, left = new.query(" UNION ALL ".join(
                f"SELECT '{t}', count() FROM {db}.{t} WHERE seq > {committed}" for t in DERIVED_TABLES))
            assert not [r for r in left if r[1]], (table, mode, left)
            if (table, mode) == ("events", AFTER):
                continue  # logged: the re-delivered messages are known, nothing is written again
            stored_inbox = {r[0] for r in new.query(f"SELECT event_id FROM {db}.inbox")[1]}
            again = dict(batch)
            again["inbox"] = [r for r in batch.get("inbox", []) if r["event_id"] not in stored_inbox]
            metrics = batch["pipeline_metrics"][0]["messages"]
            if new.scalar(f"SELECT count() FROM {db}.pipeline_metrics WHERE messages = {metrics}"):
                again.pop("pipeline_metrics")
            new.write({t: rs for t, rs in again.items() if rs})
        check_clean(st, run, clean, f"{kind}: a writer dying at {faults}")
    finally:
        st.drop()


def test_http_link_cut_in_every_mode_is_retryable_and_lands_once(request, run, ch_http):
    """The same through a TCP proxy that cuts the HTTP connection of chosen inserts before
    forwarding, after the server answered, and mid-answer. clickhouse-connect (1.12) re-sends
    an insert once by itself when the connection closes without an answer, with the same
    token: a single cut is absorbed there, two in a row reach the sink as a SinkError (never
    fatal, never a silent success). Either way the store ends equal to the clean one."""
    batches, _, _ = run
    clean = clean_snapshot("http", request, run)
    pairs = [(2, BEFORE, BEFORE), (8, AFTER, AFTER), (14, MID, MID), (20, BEFORE, MID), (26, MID, AFTER),
             (40, AFTER, BEFORE), (60, MID, BEFORE)]
    cuts = {5: AFTER, 11: BEFORE, 17: MID, 30: AFTER, 33: MID, 50: BEFORE, 70: MID}
    for n, a, b in pairs:
        cuts.update({n: a, n + 1: b})
    want = {m: sum(1 for v in cuts.values() if v == m) for m in (BEFORE, AFTER, MID)}
    with FaultProxy(ch_http.port, cuts=cuts) as proxy:
        st = Store("http", request, port=proxy.port)
        try:
            failures: list[str] = []
            for batch in batches:
                st.sink.write_retrying(batch, sleep=lambda s: None, log=failures.append)
            assert proxy.eligible > max(cuts) and proxy.counts == want, proxy.summary()
            assert not proxy.errors, proxy.errors
            assert len(failures) == len(pairs), failures  # one SinkError per pair of cuts
            check_clean(st, run, clean, f"http through a cutting proxy ({proxy.summary()})")
        finally:
            st.drop()
