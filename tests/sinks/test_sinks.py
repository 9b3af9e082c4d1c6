"""One contract, two engines: chdb in-process and clickhouse-connect over real HTTP."""
from datetime import datetime, timezone

import pytest

from poa_stream.sinks.base import FatalSinkError, Sink, SinkError
from poa_stream.sinks.ddl import TABLES

TS = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)


@pytest.fixture(params=["chdb", "http"])
def engine(request, chdb_path, database) -> Sink:
    if request.param == "chdb":
        from poa_stream.sinks.chdb_sink import ChdbSink
        s = ChdbSink(chdb_path, database)
    else:
        from poa_stream.sinks.http_sink import HttpSink
        server = request.getfixturevalue("ch_http")
        s = HttpSink(f"http://127.0.0.1:{server.port}", database=database)
    s.ensure_schema()
    yield s
    s.close()


def ledger_rows(n, seq0=1):
    return [{"entry_id": f"e{i}", "epoch": 20455, "account": f"acct{i % 7}", "role": "contributor",
             "source": "fee", "amount": 10**12 + i, "ref_event_id": f"u{i}", "ts": TS, "seq": seq0 + i}
            for i in range(n)]


def event_rows(seqs):
    return [{"seq": s, "event_id": f"ev{s}", "type": "usage", "topic": "poa.usage", "ts": TS,
             "status": "ok", "payload": "{\"ü\": \"→\"}"} for s in seqs]


def test_schema_has_every_design_column(engine):
    for name, table in TABLES.items():
        cols, _ = engine.query(f"SELECT * FROM {engine.database}.{name} LIMIT 0")
        assert cols == table.column_names
    required = {"contributions": {"contribution_id", "contributor", "datanet", "kind", "ts", "status", "duplicate_of", "quality"},
                "reward_ledger": {"entry_id", "epoch", "account", "role", "source", "amount", "ref_event_id", "ts"},
                "deadletter": {"event_id", "topic", "reason", "payload", "ts"}}
    for name, cols in required.items():
        assert cols <= set(TABLES[name].column_names)


def test_write_then_read_back_exactly(engine):
    rows = ledger_rows(5000)
    engine.write({"reward_ledger": rows, "events": event_rows(range(1, 5001))})
    db = engine.database
    assert engine.scalar(f"SELECT count() FROM {db}.reward_ledger") == 5000
    assert engine.scalar(f"SELECT sum(amount) FROM {db}.reward_ledger") == sum(r["amount"] for r in rows)
    _, got = engine.query(f"SELECT ts, payload FROM {db}.events ORDER BY seq LIMIT 1")
    ts, payload = got[0]
    assert ts.replace(tzinfo=timezone.utc) == TS and payload == "{\"ü\": \"→\"}"
    assert engine.last_seq() == 5000


def test_arrays_and_nullables(engine):
    engine.write({"models": [{"model_id": "m", "operator": "o", "method": "merge",
                              "base_models": ["a", "b"], "datanets": ["d"], "datanet_weights": [0.5],
                              "inherit": 0.3, "ts": TS, "event_id": "x", "seq": 1}],
                  "validations": [{"validator": "v", "contribution_id": "c", "verdict": "accept",
                                   "quality": None, "stake": 1, "ts": TS, "event_id": "y", "seq": 2}]})
    _, rows = engine.query(f"SELECT base_models, datanet_weights FROM {engine.database}.models")
    assert rows == [(["a", "b"], [0.5])]
    assert engine.scalar(f"SELECT countIf(quality IS NULL) FROM {engine.database}.validations") == 1


def test_recover_removes_orphans_of_an_interrupted_batch(engine):
    engine.write({"reward_ledger": ledger_rows(10), "events": event_rows(range(1, 11))})
    engine.write({"reward_ledger": ledger_rows(5, seq0=11)})  # no commit marker: crashed
    assert engine.scalar(f"SELECT count() FROM {engine.database}.reward_ledger") == 15
    assert engine.recover() == 10
    assert engine.scalar(f"SELECT count() FROM {engine.database}.reward_ledger") == 10
    assert engine.scalar(f"SELECT max(seq) FROM {engine.database}.reward_ledger") == 10


def test_load_log_pages_in_seq_order(engine):
    engine.write({"events": event_rows([3, 1, 2, 5, 4])})
    assert [r[0] for r in engine.load_log(batch_rows=2)] == [1, 2, 3, 4, 5]


def test_impossible_values_fail_fast_and_write_nothing(engine):
    db = engine.database
    for bad, words in [({"amount": "not a number"}, "reward_ledger.amount"),
                       ({"amount": 1 << 127}, "does not fit Int128"),
                       ({"epoch": -1}, "does not fit UInt32"),
                       ({"account": None}, "NULL")]:
        with pytest.raises(FatalSinkError) as info:
            engine.write({"reward_ledger": ledger_rows(3)[:2] + [{**ledger_rows(3)[2], **bad}],
                          "events": event_rows([1, 2, 3])})
        assert words in str(info.value)
        assert not isinstance(info.value, SinkError)  # never retried as if the store were down
    assert engine.scalar(f"SELECT count() FROM {db}.reward_ledger") == 0
    assert engine.scalar(f"SELECT count() FROM {db}.events") == 0


def test_money_sums_cannot_overflow(engine):
    """1,030 usages at the maximum fee: sum(fee) and sum(amount) stay exact (Int128)."""
    from poa_stream.streams.policy import MAX_FEE_MICRO
    db = engine.database
    rows = [{**ledger_rows(1, seq0=i)[0], "entry_id": f"x{i}", "amount": MAX_FEE_MICRO} for i in range(1, 1031)]
    engine.write({"reward_ledger": rows, "epochs": [{
        "epoch": 1, "start": TS, "end": TS, "budget": 0, "carried_in": 0, "emitted": 0,
        "carried_out": 0, "fee_rewards": 1030 * MAX_FEE_MICRO * 1000, "emission_rewards": 0,
        "pool_settled": 0, "pool_carried": 0, "entries": 1030, "merkle_root": "", "policy_fingerprint": "", "seq": 1}]})
    assert engine.scalar(f"SELECT sum(amount) FROM {db}.reward_ledger") == 1030 * MAX_FEE_MICRO
    assert engine.scalar(f"SELECT fee_rewards FROM {db}.epochs") == 1030 * MAX_FEE_MICRO * 1000


def test_engine_errors_are_classified(engine):
    # a statement the server rejects (unknown table: ClickHouse code 60) is a bug: fatal
    with pytest.raises(Exception) as info:
        engine.command(f"INSERT INTO {engine.database}.no_such_table VALUES (1)")
    assert isinstance(engine.classify(info.value, "x"), FatalSinkError)
    assert engine.error_code(info.value) == 60
    # transport failures and overload codes are retryable
    assert isinstance(engine.classify(ConnectionResetError("reset"), "x"), SinkError)
    assert isinstance(engine.classify(RuntimeError("Code: 252. DB::Exception: Too many parts"), "x"),
                      SinkError)
    assert isinstance(engine.classify(TypeError("bug"), "x"), FatalSinkError)


def test_a_retried_batch_lands_once(engine):
    db = engine.database
    rows = {"reward_ledger": ledger_rows(50), "flags": [], "events": event_rows(range(1, 51))}
    key = engine.next_batch_key()
    engine.write(rows, key)
    engine.write(rows, key)  # the answer was lost: the same batch is sent again (tokens)
    engine.write(rows, key, retry=True)  # ... and again, reading back what landed first
    assert engine.scalar(f"SELECT count() FROM {db}.reward_ledger") == 50
    assert engine.scalar(f"SELECT count() FROM {db}.events") == 50
    # a different batch with byte-identical rows is not mistaken for a retry
    engine.write({"inbox": [{"event_id": "x", "topic": "t", "ts": TS, "payload": "p"}]})
    engine.write({"inbox": [{"event_id": "x", "topic": "t", "ts": TS, "payload": "p"}]})
    assert engine.scalar(f"SELECT count() FROM {db}.inbox") == 2


def test_rows_deleted_by_recover_can_be_written_again_by_the_next_writer(engine):
    """ClickHouse keeps a deleted block's dedup token: a new generation uses new tokens."""
    from poa_stream.sinks.lease import Lease
    db = engine.database
    Lease(engine, ttl_s=30, settle_s=0).acquire()
    engine.write({"reward_ledger": ledger_rows(5, seq0=1)})  # no commit marker: a crash
    assert engine.recover() == 0
    assert engine.scalar(f"SELECT count() FROM {db}.reward_ledger") == 0
    engine.lease.release()
    engine._batches = 0  # the next incarnation counts its batches from 1 again
    Lease(engine, ttl_s=30, settle_s=0).acquire()
    engine.write({"reward_ledger": ledger_rows(5, seq0=1), "events": event_rows(range(1, 6))})
    assert engine.scalar(f"SELECT count() FROM {db}.reward_ledger") == 5
