"""One writer per store: the lease refuses a second writer, fences a replaced one, and is
free again after a clean release or after its TTL (both engines)."""
from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from poa_stream.sinks.base import SinkError
from poa_stream.sinks.lease import Lease, LeaseLost, StoreLocked


@pytest.fixture(params=["chdb", "http"])
def engines(request, chdb_path, database):
    """Two sinks on one store, as two writer processes would hold them."""
    if request.param == "chdb":
        from poa_stream.sinks.chdb_sink import ChdbSink
        a, b = ChdbSink(chdb_path, database), ChdbSink(chdb_path, database)
    else:
        from poa_stream.sinks.http_sink import HttpSink
        url = f"http://127.0.0.1:{request.getfixturevalue('ch_http').port}"
        a, b = HttpSink(url, database=database), HttpSink(url, database=database)
    a.ensure_schema()
    yield a, b
    a.close()
    b.close()


def test_second_writer_is_refused_with_a_clear_message(engines):
    a, b = engines
    first = Lease(a, ttl_s=30, owner="worker-a", settle_s=0)
    assert first.acquire() == 1
    with pytest.raises(StoreLocked) as info:
        Lease(b, ttl_s=30, owner="worker-b", settle_s=0).acquire()
    assert "held by writer worker-a" in str(info.value) and "generation 1" in str(info.value)
    first.check()  # still the holder


def test_clean_release_frees_the_store_at_once(engines):
    a, b = engines
    first = Lease(a, ttl_s=30, owner="worker-a", settle_s=0)
    first.acquire()
    first.release()
    assert Lease(b, ttl_s=30, owner="worker-b", settle_s=0).acquire() == 2


def test_a_silent_writer_is_replaced_after_the_ttl_and_then_fenced(engines):
    a, b = engines
    old = Lease(a, ttl_s=1.0, owner="worker-a", settle_s=0)
    old.acquire()
    time.sleep(1.3)  # worker-a paused (SIGSTOP, GC, cut off) and did not renew
    new = Lease(b, ttl_s=1.0, owner="worker-b", settle_s=0)
    assert new.acquire() == 2
    with pytest.raises(LeaseLost, match="now held by worker-b"):
        old.check()
    rows = {"events": [{"seq": 1, "event_id": "e", "type": "usage", "topic": "t",
                        "ts": datetime.now(timezone.utc),
                        "status": "ok", "payload": "{}"}]}
    with pytest.raises(LeaseLost):
        a.write(rows)  # the fenced writer cannot write a batch
    assert a.scalar(f"SELECT count() FROM {a.database}.events") == 0
    b.write(rows)
    assert b.scalar(f"SELECT count() FROM {b.database}.events") == 1


def test_racing_writers_agree_on_one_winner(engines):
    a, b = engines
    la = Lease(a, ttl_s=30, owner="worker-a", settle_s=0)
    lb = Lease(b, ttl_s=30, owner="worker-b", settle_s=0)
    # both read "no holder" and both record generation 1: the store's order decides
    la._insert(1, 0)
    lb._insert(1, 0)
    la.generation, lb.generation = 1, 1
    outcomes = []
    for lease in (la, lb):
        try:
            lease._verify()
            outcomes.append(lease.owner)
        except LeaseLost:
            pass
    assert outcomes == ["worker-a"]


def test_an_unreachable_store_is_a_retryable_lease_error(ch_http, database):
    """The link to the store goes away under a lease holder (a real proxy, then closed):
    retryable, not fatal."""
    from poa_stream.sinks.http_sink import HttpSink
    from support.faults import FaultProxy
    with FaultProxy(ch_http.port, cuts={}) as proxy:
        a = HttpSink(f"http://127.0.0.1:{proxy.port}", database=database)
        a.ensure_schema()
        lease = Lease(a, ttl_s=30, owner="worker-a", settle_s=0)
        lease.acquire()
    with pytest.raises(SinkError):  # the proxy is gone: connection refused
        lease.check()
    a.close()


def test_the_same_worker_restarted_after_a_crash_takes_over_at_once(engines):
    a, b = engines
    dead = Lease(a, ttl_s=30, identity="worker:poa/worker-0@host", settle_s=0)
    dead.acquire()  # then SIGKILL: no release
    with pytest.raises(StoreLocked):
        Lease(b, ttl_s=30, identity="worker:poa/worker-1@host", settle_s=0).acquire()
    again = Lease(b, ttl_s=30, identity="worker:poa/worker-0@host", settle_s=0)
    assert again.acquire() == 2
    with pytest.raises(LeaseLost):
        dead.check()  # had the old process survived, it is fenced


@pytest.mark.parametrize("mode", ["before", "after"])
def test_taking_the_lease_survives_a_cut_connection(ch_http, database, mode):
    """A cut while the lease row is written (before it is forwarded, or after it landed) is
    retried by the same writer, which does not lock itself out."""
    from poa_stream.sinks.http_sink import HttpSink
    from support.faults import FaultProxy
    setup = HttpSink(f"http://127.0.0.1:{ch_http.port}", database=database)
    setup.ensure_schema()
    setup.close()
    with FaultProxy(ch_http.port, match=b"writer_lease SELECT", cuts={1: mode, 2: mode}) as proxy:
        sink = HttpSink(f"http://127.0.0.1:{proxy.port}", database=database)
        lease = Lease(sink, ttl_s=30, settle_s=0)
        gen = sink.retrying(lease.acquire, "taking the writer lease", sleep=lambda s: None)
        assert gen >= 1 and lease.holder()["owner"] == lease.owner
        lease.check()
        assert proxy.counts[mode] == 2  # the client re-sends once; two cuts reach the sink
        sink.close()


def test_a_writer_paused_between_two_inserts_of_a_batch_writes_no_more(engines):
    """The lease is checked before a batch and, when a renewal is due, between its inserts:
    a writer paused mid-batch long enough to be replaced stops before its next insert."""
    a, b = engines
    old = Lease(a, ttl_s=1.0, owner="worker-a", settle_s=0)
    old.acquire()
    real_insert, calls = a.insert, []

    def insert_then_pause(table, cols, token):
        real_insert(table, cols, token)
        calls.append(table)
        if len(calls) == 1:  # paused right after the first insert; the other writer takes over
            time.sleep(1.3)
            Lease(b, ttl_s=1.0, owner="worker-b", settle_s=0).acquire()
    a.insert = insert_then_pause
    ts = datetime.now(timezone.utc)
    rows = {"deadletter": [{"event_id": "x", "topic": "t", "reason": "r", "payload": "", "ts": ts, "seq": 1}],
            "events": [{"seq": 1, "event_id": "e", "type": "usage", "topic": "t", "ts": ts,
                        "status": "ok", "payload": "{}"}]}
    with pytest.raises(LeaseLost, match="now held by worker-b"):
        a.write(rows)
    assert calls == ["deadletter"]
    assert a.scalar(f"SELECT count() FROM {a.database}.events") == 0


def test_a_release_during_a_renewal_is_not_a_lost_lease(engines):
    """The heartbeat renews on its own thread; a handover or a stop releases on another. A
    release landing between the renewal's two reads must not look like a replacement (the
    renewal saw "generation 0" and stopped a worker that was only stepping down)."""
    import threading

    a, _ = engines
    inside, go = threading.Event(), threading.Event()
    renewer: list[threading.Thread] = []

    class Paused(Lease):  # the renewal's first read of the holder waits until told to go on
        def holder(self):
            if renewer and threading.current_thread() is renewer[0] and not go.is_set():
                inside.set()
                go.wait(10)
            return super().holder()

    lease = Paused(a, ttl_s=30, owner="worker-a", settle_s=0)
    lease.acquire()
    errors: list[BaseException] = []

    def run(fn):
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    renewer.append(threading.Thread(target=run, args=(lease.renew,)))
    renewer[0].start()
    assert inside.wait(10)
    releaser = threading.Thread(target=run, args=(lease.release,))
    releaser.start()
    releaser.join(2)  # without the lease's lock the release completes here, mid-renewal
    go.set()
    renewer[0].join(10)
    releaser.join(10)
    assert errors == []
    assert lease.generation == 0
    cur = Lease(a, owner="reader").holder()
    assert cur["owner"] == "worker-a" and cur["released"]
