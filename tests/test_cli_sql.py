"""`poa sql` with clickhouse-client conventions, `poa store`, one-line errors, `--version`
(issue "tools people reach for"). Subprocesses against a real chdb store."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from poa_stream.scenario import generate, write


def poa(*args, env=None, input=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "poa_stream.cli", *args], capture_output=True, text=True,
                          timeout=600, env=env, input=input)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A POA_HOME whose only store is the one `poa demo` leaves (<home>/demo/store)."""
    d = tmp_path_factory.mktemp("sqlhome")
    events, _ = write(generate(seed=5, scale=0.1), d / "scen")
    out = poa("replay", str(events), "--store", str(d / "demo" / "store"))
    assert out.returncode == 0, out.stderr
    env = {**os.environ, "POA_HOME": str(d)}
    for k in ("POA_STORE_DIR", "POA_STORE_ENGINE"):
        env.pop(k, None)
    return d, env


def test_queries_params_and_formats(home):
    d, env = home
    out = poa("sql", "-q", "SELECT {n:UInt8} + 1 AS x", "--param_n=41", "-q", "SELECT {s:String} AS s",
              "--param_s", "it's", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "42\nit\\'s\n"  # piped: TSV (escaped as TSV escapes)
    out = poa("sql", "SELECT 1 AS x, 'a' AS y", "--format", "JSONEachRow", env=env)
    assert json.loads(out.stdout) == {"x": 1, "y": "a"}
    out = poa("sql", "SELECT 1 AS x FORMAT CSVWithNames", env=env)  # the query's own FORMAT
    assert out.stdout.splitlines() == ['"x"', "1"]
    out = poa("sql", env=env, input="SELECT 1; -- a comment; with a semicolon\nSELECT ';' AS s;\n/* ; */ SELECT 3")
    assert out.stdout.splitlines() == ["1", ";", "3"], out.stderr
    f = d / "q.sql"
    f.write_text("SELECT count() > 0 FROM reward_ledger;\nSELECT count() > 0 FROM contributions FINAL;")
    assert poa("sql", "--queries-file", str(f), env=env).stdout.splitlines() == ["1", "1"]
    # a parameter the query needs but nobody gave: one line, exit 1
    bad = poa("sql", "SELECT {missing:UInt8}", env=env)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("stmt", [
    "INSERT INTO reward_ledger (account) VALUES ('mallory')",
    "CREATE TABLE scratch (x Int8) ENGINE = Memory",
    "DROP TABLE reward_ledger",
    "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')",
    "SET readonly = 0",
])
def test_read_only_without_write(home, stmt):
    _, env = home
    before = poa("sql", "SELECT count() FROM reward_ledger", env=env).stdout
    bad = poa("sql", stmt, env=env)
    assert bad.returncode == 1, bad.stdout
    assert len(bad.stderr.strip().splitlines()) == 1 and "--write" in bad.stderr, bad.stderr
    assert poa("sql", "SELECT count() FROM reward_ledger", env=env).stdout == before


def test_write_flag_allows_changes(home):
    _, env = home
    ok = poa("sql", "--write", "CREATE TABLE IF NOT EXISTS scratch (x Int8) ENGINE = MergeTree ORDER BY x; "
             "INSERT INTO scratch VALUES (7)", env=env)
    assert ok.returncode == 0, ok.stderr
    assert poa("sql", "SELECT sum(x) FROM scratch", env=env).stdout == "7\n"
    poa("sql", "--write", "DROP TABLE scratch", env=env)


def test_store_resolution_and_one_line_errors(home, tmp_path):
    d, env = home
    where = poa("store", env=env)
    assert str(d / "demo" / "store") in where.stdout.replace("\n", "") and "poa demo" in where.stdout
    empty = {**env, "POA_HOME": str(tmp_path / "nothing")}
    for args in (["sql", "SELECT 1"], ["report"], ["proof", "--account", "a", "--epoch", "1"], ["store", "info"]):
        bad = poa(*args, env=empty)
        assert bad.returncode == 1 and bad.stderr.count("\n") <= 1 and "no store at" in bad.stderr, (args, bad.stderr)
    http = {**env, "POA_STORE_ENGINE": "http", "POA_CLICKHOUSE_URL": "http://127.0.0.1:9"}
    bad = poa("sql", "SELECT 1", env=http)
    assert bad.returncode == 1 and bad.stderr.count("\n") <= 1 and "cannot open the store" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = poa("sql", "--bogus", env=env)
    assert bad.returncode == 2 and "--bogus" in bad.stderr


def test_version_and_clean_help():
    from importlib.metadata import version
    assert poa("--version").stdout.strip() == f"poa {version('poa-stream')}"
    for cmd in ([], ["sql"], ["replay"], ["emit", "usage"], ["proof"]):
        text = poa(*cmd, "--help").stdout
        assert "<bool>" not in text and "<list[" not in text and "<str>" not in text, (cmd, text)


def test_tokens_are_exact():
    from poa_stream.cli_contrib import tokens
    assert tokens(1_234_567) == "1.234567" and tokens(-5) == "-0.000005" and tokens(0) == "0.000000"
    assert tokens(10**24 + 1) == "1,000,000,000,000,000,000.000001"  # no float rounding


def test_epochs_and_explain(home):
    _, env = home
    n = int(poa("sql", "SELECT count() FROM epochs", env=env).stdout)
    lines = poa("epochs", env=env).stdout.splitlines()
    assert n >= 1 and len(lines) == n
    first = lines[0].split("\t")
    budget = int(poa("sql", f"SELECT budget FROM epochs WHERE epoch = {first[0]}", env=env).stdout)
    assert first[3].replace(",", "") == f"{budget // 10**6}.{budget % 10**6:06d}"
    assert len(poa("epochs", "--json", env=env).stdout.splitlines()) == n
    acct, epoch = poa("sql", "SELECT account, epoch FROM reward_ledger WHERE role = 'contributor' AND source = 'fee' "
                      "GROUP BY account, epoch ORDER BY count() DESC, account LIMIT 1", env=env).stdout.split()
    out = poa("explain", "--account", acct, "--epoch", epoch, "--json", env=env)
    credits = [json.loads(line) for line in out.stdout.splitlines()]
    want = int(poa("sql", f"SELECT sum(amount) FROM reward_ledger WHERE account = '{acct}' AND epoch = {epoch}",
                   env=env).stdout)
    assert sum(c["amount"] for c in credits) == want
    fee = [c for c in credits if c["source"] == "fee"]
    assert fee and all(c["attributed"] and c["model_id"] for c in fee)  # each fee credit has its why
    cids = {a["contribution_id"] for c in fee for a in c["attributed"]}
    owners = poa("sql", "SELECT DISTINCT contributor FROM contributions WHERE contribution_id IN ("
                 + ",".join(f"'{x}'" for x in cids) + ")", env=env).stdout.split()
    assert owners == [acct]
    text = poa("explain", "--account", acct, "--epoch", epoch, env=env).stdout.splitlines()
    assert text[-1].endswith(f"({want:,} micro-units)")
    bad = poa("explain", "--account", "nobody", "--epoch", epoch, env=env)
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0


def test_a_store_held_by_another_process_or_unwritable_is_one_line(home, tmp_path):
    d, env = home
    store = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from sinks.chdb_sink import ChdbSink; s = ChdbSink(sys.argv[1]); "
                               "s.ensure_schema(); print('ready', flush=True); time.sleep(120)", str(store)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        bad = poa("sql", "--store", str(store), "SELECT 1", env=env)
        assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0, bad.stderr
        assert "cannot open the store" in bad.stderr and "Traceback" not in bad.stderr
    finally:
        holder.kill()
        holder.wait()
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")  # a store path that cannot be a directory (also as root)
    events = next((d / "scen").glob("events.jsonl"))
    bad = poa("replay", str(events), "--store", str(not_a_dir), env=env)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "cannot open the store" in bad.stderr
    assert bad.stderr.strip().count("\n") == 0, bad.stderr


def test_emit_usage_warns_about_an_unregistered_model(home):
    _, env = home
    known = poa("sql", "SELECT model_id FROM models ORDER BY model_id LIMIT 1", env=env).stdout.strip()
    typo = poa("emit", "usage", "--model-id", known + "-typo", "--fee", "1", "--output", "x", "--dry-run", env=env)
    assert typo.returncode == 0 and "is not registered" in typo.stderr and known + "-typo" in typo.stderr
    fine = poa("emit", "usage", "--model-id", known, "--fee", "1", "--output", "x", "--dry-run", env=env)
    assert fine.returncode == 0 and "not registered" not in fine.stderr


def test_read_only_over_a_clickhouse_http_server(ch_http, sink, database):
    """`poa sql` with POA_STORE_ENGINE=http against a real ClickHouse HTTP endpoint whose
    user may write (ChdbHttpServer, not read-only): reads, parameters, and writes and
    host-reading table functions refused unless --write."""
    env = {**os.environ, "POA_STORE_ENGINE": "http", "POA_CLICKHOUSE_URL": f"http://127.0.0.1:{ch_http.port}",
           "POA_CLICKHOUSE_DATABASE": database}
    env.pop("POA_STORE_DIR", None)
    out = poa("sql", "SELECT {n:UInt8} * 2 AS x, count() FROM reward_ledger", "--param_n=21", env=env)
    assert out.returncode == 0 and out.stdout == "42\t0\n", out.stderr
    for stmt in ("INSERT INTO reward_ledger (account) VALUES ('mallory')",
                 "SELECT * FROM file('/etc/hostname', 'LineAsString')", "DROP TABLE reward_ledger"):
        bad = poa("sql", stmt, env=env)
        assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1, (stmt, bad.stderr)
    assert sink.scalar(f"SELECT count() FROM {database}.reward_ledger") == 0
    assert "reward_ledger" in poa("sql", "SHOW TABLES", env=env).stdout.split()
    ok = poa("sql", "--write", "CREATE TABLE scratch (x Int8) ENGINE = MergeTree ORDER BY x; "
             "INSERT INTO scratch VALUES (5)", env=env)
    assert ok.returncode == 0, ok.stderr
    assert sink.scalar(f"SELECT sum(x) FROM {database}.scratch") == 5
