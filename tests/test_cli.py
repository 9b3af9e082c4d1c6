"""The `poa` commands as a user runs them (subprocesses, real chdb store)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from poa_stream.scenario import generate, write


def poa(*args, check=True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "poa_stream.cli", *args], capture_output=True, text=True,
                          check=check, timeout=600, **kw)


def rows(store, sql) -> list[dict]:
    out = poa("sql", "--store", str(store), sql + " FORMAT JSONEachRow").stdout
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    events, truth = write(generate(seed=11, scale=0.15), d)
    store = d / "store"
    out = poa("replay", str(events), "--store", str(store))
    return store, events, json.loads(truth.read_text()), out.stdout


def test_replay_then_sql_shows_every_table(replayed):
    store, events, truth, stdout = replayed
    lines = sum(1 for _ in open(events, "rb"))
    logged = lines - len(truth["redeliveries"])
    assert f"{logged} new events logged" in stdout.replace("\n", " ")
    assert f"{len(truth['malformed'])} dead letters" in stdout.replace("\n", " ")
    for table in ("contributions", "attributions", "reward_ledger", "deadletter"):
        n = rows(store, f"SELECT count() AS n FROM {table}")[0]["n"]
        assert int(n) > 0, table
    dl = rows(store, "SELECT reason FROM deadletter")
    assert len(dl) == len(truth["malformed"])


def test_every_usage_fee_is_credited_exactly(replayed):
    store, *_ = replayed
    bad = rows(store, "SELECT u.event_id, any(u.fee) AS fee, sum(l.amount) AS credited FROM usage u "
                      "LEFT JOIN reward_ledger l ON l.ref_event_id = u.event_id WHERE u.fee > 0 "
                      "GROUP BY u.event_id HAVING credited != fee")
    assert bad == []
    zero = rows(store, "SELECT count() AS n FROM reward_ledger WHERE amount <= 0 AND role NOT IN ('pool', 'escrow')")[0]["n"]
    assert int(zero) == 0
    # the only debits: pool settlements and escrow resolutions, each equal to what it pays out
    bad = rows(store, "SELECT ref_event_id, sumIf(amount, role = 'pool') AS debit, "
                      "sumIf(amount, role != 'pool') AS paid FROM reward_ledger WHERE source = 'pool' "
                      "GROUP BY ref_event_id HAVING debit >= 0 OR debit + paid != 0")
    assert bad == []
    bad = rows(store, "SELECT ref_event_id, sumIf(amount, role = 'escrow') AS debit, "
                      "sumIf(amount, role != 'escrow') AS paid FROM reward_ledger WHERE source = 'escrow' "
                      "GROUP BY ref_event_id HAVING debit >= 0 OR debit + paid != 0")
    assert bad == []
    assert int(rows(store, "SELECT count() AS n FROM reward_ledger WHERE amount < 0 "
                           "AND source NOT IN ('pool', 'escrow')")[0]["n"]) == 0
    assert int(rows(store, "SELECT count() AS n FROM reward_ledger WHERE source = 'escrow'")[0]["n"]) > 0


def test_replaying_again_changes_nothing(replayed):
    store, events, truth, _ = replayed
    before = rows(store, "SELECT count() AS n, sum(amount) AS s FROM reward_ledger")
    out = poa("replay", str(events), "--store", str(store)).stdout
    logged = sum(1 for _ in open(events, "rb")) - len(truth["redeliveries"])
    assert f"0 new events logged ({logged} were in the store)" in out.replace("\n", " ")
    assert rows(store, "SELECT count() AS n, sum(amount) AS s FROM reward_ledger") == before


def test_sql_default_format_and_errors(replayed):
    store, *_ = replayed
    out = poa("sql", "--store", str(store), "SELECT count() FROM events").stdout
    assert out.strip().isdigit() and int(out) > 0  # piped: TSV, as clickhouse-client does
    out = poa("sql", "--store", str(store), "--format", "PrettyCompactMonoBlock", "SELECT count() FROM events").stdout
    assert "count()" in out and "┌" in out
    bad = poa("sql", "--store", str(store), "SELECT nope FROM events", check=False)
    assert bad.returncode == 1 and "query failed" in bad.stderr


def test_schema_prints_json_schema():
    schema = json.loads(poa("schema").stdout)
    assert "discriminator" in json.dumps(schema) and "Usage" in json.dumps(schema)


def test_bad_fee_shares_rejected_clearly():
    import os
    bad = poa("kafka", "status", check=False, env={**os.environ, "POA_SHARE_OPERATOR_BPS": "9000"})
    assert bad.returncode != 0 and "fee shares must sum to 10000 bps" in bad.stderr


def test_proof_round_trip_and_forgery(replayed, tmp_path):
    store, *_ = replayed
    top = rows(store, "SELECT account, epoch FROM reward_ledger WHERE epoch IN (SELECT epoch FROM epochs) "
                      "GROUP BY account, epoch ORDER BY sum(amount) DESC LIMIT 1")[0]
    proof_file = tmp_path / "proof.json"
    poa("proof", "--store", str(store), "--account", top["account"], "--epoch", str(top["epoch"]),
        "--out", str(proof_file))
    ok = poa("verify", str(proof_file), "--store", str(store))
    assert "valid:" in ok.stdout
    doc = json.loads(proof_file.read_text())
    assert doc["format"] == "poa-proof/2" and all("audit_path" in p for p in doc["proofs"])
    # against a root published elsewhere, as JSON; without any trusted root: exit 2, not "valid"
    ok = poa("verify", str(proof_file), "--root", doc["merkle_root"], "--json")
    assert json.loads(ok.stdout)["valid"] is True
    alone = poa("verify", str(proof_file), check=False)
    assert alone.returncode == 2 and "no trusted root" in alone.stderr
    # a self-consistent forgery (its own made-up root) fails against the trusted root
    fake = dict(doc, merkle_root="ab" * 32)
    (tmp_path / "fake.json").write_text(json.dumps(fake))
    bad = poa("verify", str(tmp_path / "fake.json"), "--root", doc["merkle_root"], "--json", check=False)
    assert bad.returncode == 1 and json.loads(bad.stdout)["valid"] is False
    for junk in ("not json", json.dumps({"epoch": 1}), json.dumps(dict(doc, proofs=[{"entry": {}}]))):
        (tmp_path / "junk.json").write_text(junk)
        bad = poa("verify", str(tmp_path / "junk.json"), "--root", doc["merkle_root"], check=False)
        assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
    doc["proofs"][0]["entry"]["amount"] += 1
    doc["proofs"][0]["leaf"] = "00" * 32
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(doc))
    bad = poa("verify", str(forged), "--store", str(store), check=False)
    assert bad.returncode == 1 and "do not hash to its leaf" in bad.stderr
    missing = poa("proof", "--store", str(store), "--account", "nobody", "--epoch", str(top["epoch"]), check=False)
    assert missing.returncode == 1 and "no ledger entries" in missing.stderr


def test_demo_without_java_runs_the_replay_path(tmp_path):
    """No Java or Maven on PATH: one clear line, then the same scenario through replay."""
    import os
    import shutil
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(sys.executable, bindir / "python")
    env = {**os.environ, "PATH": str(bindir), "POA_HOME": str(tmp_path / "home")}
    env.pop("POA_KAFKA_BOOTSTRAP", None)
    assert shutil.which("java", path=str(bindir)) is None
    out = subprocess.run([sys.executable, "-m", "poa_stream.cli", "demo", "--scale", "0.1"], capture_output=True,
                         text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout.replace("\n", " ")
    assert "java and mvn not found" in text and "REPLAY PATH" in text
    assert "usage events whose credits != fee" in text
    assert (tmp_path / "home" / "demo" / "report.html").exists()
    # the other commands find the store the demo left (no --store): not an empty default one
    where = subprocess.run([sys.executable, "-m", "poa_stream.cli", "store"], capture_output=True, text=True, env=env)
    assert str(tmp_path / "home" / "demo" / "store") in where.stdout.replace("\n", "")
    n = subprocess.run([sys.executable, "-m", "poa_stream.cli", "sql", "SELECT count() FROM reward_ledger"],
                       capture_output=True, text=True, env=env)
    assert n.returncode == 0 and int(n.stdout) > 0, n.stderr
