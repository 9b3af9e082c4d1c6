"""Snapshots: restart = newest usable snapshot + the log after it, with the same ledger.

The replay path against real chdb stores; a SIGKILL half-way through a snapshot write in
a real ``poa replay`` process. (The worker over the real broker: test_faults_kafka.py.)"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from poa_stream.scenario import generate
from poa_stream.settings import Settings
from poa_stream.processors.core import Core
from poa_stream.processors.replay import replay_into
from poa_stream.processors.snapshots import MAGIC, Snapshots
from poa_stream.sinks.chdb_sink import ChdbSink

SEED, SCALE = 5, 0.5


@pytest.fixture(scope="module")
def lines():
    return [(t, line.encode()) for t, line in generate(seed=SEED, scale=SCALE).records]


def _settings(tmp_path, every=150, **kw) -> Settings:
    return Settings(home=tmp_path / "home", snapshot_dir=tmp_path / "snaps",
                    snapshot_every_events=every, replay_batch_events=100, **kw)


def ledger(sink):
    _, rows = sink.query(f"SELECT entry_id, epoch, account, role, source, toString(amount), ref_event_id "
                         f"FROM {sink.database}.reward_ledger ORDER BY entry_id")
    return rows


def roots(sink):
    return sink.query(f"SELECT epoch, merkle_root FROM {sink.database}.epochs ORDER BY epoch")[1]


@pytest.fixture(scope="module")
def reference(lines, tmp_path_factory, chdb_path):
    """The whole workload in one run, no snapshots: the ledger every restart must reach."""
    tmp = tmp_path_factory.mktemp("ref")
    sink = ChdbSink(chdb_path, "snapref")
    replay_into(lines, _settings(tmp, every=0), sink)
    out = ledger(sink), roots(sink)
    sink.close()
    return out


def _restored(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "restored from snapshot" in r.getMessage()]


def test_restart_from_a_snapshot_replays_only_the_tail(lines, tmp_path, sink, reference, caplog):
    s = _settings(tmp_path)
    cut = len(lines) * 3 // 5
    replay_into(lines[:cut], s, sink)
    snaps = Snapshots.for_settings(s).list()
    tail = sink.last_seq() - snaps[0].seq
    assert len(snaps) == s.snapshot_keep and 0 <= tail < s.snapshot_every_events
    with caplog.at_level(logging.INFO, logger="poa.replay"):
        core = replay_into(lines[cut:], s, sink)
    assert _restored(caplog) and f"(seq {snaps[0].seq}) + {tail} logged events" in _restored(caplog)[0]
    assert core.restored_seq == snaps[0].seq
    assert (ledger(sink), roots(sink)) == reference


def _flip(path, at):
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_snapshots_are_set_aside_and_an_older_one_used(lines, tmp_path, sink, reference, caplog):
    s = _settings(tmp_path, snapshot_keep=4)
    cut = len(lines) * 3 // 5
    replay_into(lines[:cut], s, sink)
    snaps = Snapshots.for_settings(s).list()
    assert len(snaps) == 4
    _flip(snaps[0].path, snaps[0].nbytes - 10)  # the body: checksum mismatch
    snaps[1].path.write_bytes(snaps[1].path.read_bytes()[: snaps[1].nbytes // 2])  # truncated
    snaps[2].path.write_bytes(b"not a snapshot at all")
    (s.snapshot_path / f".{snaps[0].path.name}.tmp-999").write_bytes(MAGIC + b"partial")
    with caplog.at_level(logging.INFO):
        core = replay_into(lines[cut:], s, sink)
    text = caplog.text
    assert "checksum mismatch" in text and "truncated" in text
    assert core.restored_seq > snaps[3].seq and f"(seq {snaps[3].seq})" in _restored(caplog)[0]
    assert sorted(p.name for p in s.snapshot_path.glob("*.bad")) == sorted(
        x.path.with_suffix(".bad").name for x in snaps[:2])
    assert not list(s.snapshot_path.glob(".snap-*.tmp-*"))  # the partial write was removed
    assert (ledger(sink), roots(sink)) == reference


def test_a_snapshot_whose_tail_does_not_reproduce_the_store_is_refused(lines, tmp_path, sink, reference, caplog):
    """A snapshot that reads fine but holds the wrong state (here: every contribution made
    ineligible) is caught by replaying its tail against the stored ledger rows."""
    s = _settings(tmp_path)
    cut = len(lines) * 3 // 5
    replay_into(lines[:cut], s, sink)
    snaps = Snapshots.for_settings(s)
    newest, second, third = snaps.list()[:3]
    newest.path.unlink()
    bad = Core(s)
    bad.load_snapshot_state(snaps.read(second))
    bad.corpus.eligible[:] = False  # wrong, with a valid checksum
    snaps.write(bad)
    with caplog.at_level(logging.INFO):
        replay_into(lines[cut:], s, sink)
    assert "differ from the" in caplog.text and f"(seq {third.seq})" in _restored(caplog)[0]
    assert (ledger(sink), roots(sink)) == reference


def test_a_snapshot_of_another_store_is_not_used(lines, tmp_path, sink, reference, caplog, chdb_path):
    s = _settings(tmp_path)
    other = ChdbSink(chdb_path, sink.database + "_other")
    replay_into(lines, s, other)  # snapshots of a longer log, in the same directory
    other.close()
    with caplog.at_level(logging.INFO):
        replay_into(lines, s, sink)
    assert "is not in this store's log" in caplog.text
    assert (ledger(sink), roots(sink)) == reference


def test_sigkill_during_a_snapshot_write_keeps_the_previous_one(lines, tmp_path, reference):
    """A real ``poa replay`` process killed half-way through writing its third snapshot:
    the temporary file never becomes a snapshot, the second one is used, and running the
    same file again ends with the uninterrupted ledger."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(raw + b"\n" for _, raw in lines))
    store, snaps_dir = tmp_path / "store", tmp_path / "store.snapshots"
    env = dict(os.environ, POA_HOME=str(tmp_path / "home"), POA_SNAPSHOT_EVERY_EVENTS="150",
               POA_REPLAY_BATCH_EVENTS="100", POA_SNAPSHOT_KEEP="5", POA_STORE_LEASE_TTL_S="2")
    cmd = [sys.executable, "-m", "poa_stream.cli", "replay", str(path), "--store", str(store)]
    run = subprocess.run(cmd, env={**env, "POA_FAILPOINTS": "kill:snapshot@3"}, capture_output=True, timeout=600)
    assert run.returncode == -signal.SIGKILL, run.stderr.decode()[-2000:]
    assert len(list(snaps_dir.glob("snap-*.poa"))) == 2
    assert len(list(snaps_dir.glob(".snap-*.tmp-*"))) == 1  # half written, never renamed
    time.sleep(2.5)  # the killed writer's lease expires
    run = subprocess.run(cmd, env=env, capture_output=True, timeout=600)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    assert not list(snaps_dir.glob(".snap-*.tmp-*"))
    # another chdb path: read it from another process (one embedded engine per process)
    def q(sql):
        out = subprocess.run([sys.executable, "-m", "poa_stream.cli", "sql", "--store", str(store), sql + " FORMAT JSONCompact"],
                             env=env, check=True, capture_output=True, text=True, timeout=120)
        return [tuple(r) for r in json.loads(out.stdout)["data"]]
    got = (q("SELECT entry_id, epoch, account, role, source, toString(amount), ref_event_id FROM reward_ledger ORDER BY entry_id"),
           q("SELECT epoch, merkle_root FROM epochs ORDER BY epoch"))
    assert got == tuple([tuple(r) for r in part] for part in reference)


def test_a_snapshot_written_by_other_code_is_not_loaded(lines, tmp_path, sink, reference, caplog, monkeypatch):
    import poa_stream.processors.snapshots as snapmod
    s = _settings(tmp_path)
    cut = len(lines) // 2
    monkeypatch.setattr(snapmod, "_CODE", ["an older release"])
    replay_into(lines[:cut], s, sink)
    monkeypatch.setattr(snapmod, "_CODE", [])
    with caplog.at_level(logging.INFO):
        replay_into(lines[cut:], s, sink)
    assert "written by another version of the code" in caplog.text and not _restored(caplog)
    assert (ledger(sink), roots(sink)) == reference


def test_a_quarantine_rebuild_starts_from_the_newest_snapshot(lines, tmp_path, sink, chdb_path, monkeypatch):
    """A handler error rebuilds the core from the newest snapshot plus the log after it (not
    the whole log); the ledger equals a run without snapshots that quarantined the same event."""
    import poa_stream.processors.replay as replay_mod
    from poa_stream.processors import failpoints
    cut = len(lines) // 2
    victim = next(json.loads(raw)["event_id"] for t, raw in lines[cut + 200:] if t == "poa.usage")
    monkeypatch.setattr(failpoints, "ACTIVE", {("apply", victim)})
    bases = []
    orig = replay_mod._state_at

    def spy(snaps, seq):
        state = orig(snaps, seq)
        bases.append(None if state is None else state["seq"])
        return state
    monkeypatch.setattr(replay_mod, "_state_at", spy)
    s = _settings(tmp_path)
    replay_into(lines[:cut], s, sink)
    core = replay_into(lines[cut:], s, sink)
    assert core.stats.quarantined == 1 and bases and bases[0] is not None and bases[0] > 0
    plain = ChdbSink(chdb_path, sink.database + "_plain")
    try:
        replay_into(lines, _settings(tmp_path / "plain", every=0), plain)
        assert (ledger(sink), roots(sink)) == (ledger(plain), roots(plain))
        assert sink.scalar(f"SELECT count() FROM {sink.database}.events WHERE event_id = 'quarantine:{victim}'") == 1
    finally:
        plain.close()
