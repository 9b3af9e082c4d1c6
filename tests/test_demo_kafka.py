"""`poa demo` on a real broker: the scaled topology's worker, and the check that the stored
event log, ledger and epoch roots equal the offline merge of the input topics; `poa audit`
makes the same check on its own and finds a forged ledger entry."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from poa_stream.kafka_local import reset_topics

pytestmark = pytest.mark.kafka


def test_demo_streams_and_checks_its_ledger_against_the_offline_merge(kafka_bootstrap, tmp_path):
    reset_topics(kafka_bootstrap, 3)  # the demo's input: its own scenario only
    env = {**os.environ, "POA_HOME": str(tmp_path / "home"), "POA_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "POA_METRICS_PORT": "0", "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "poa_stream.cli", "demo", "--scale", "0.15"],
                         capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    assert "scaled topology" in out.stdout
    assert "the ledger is a function of the input log" in out.stdout, out.stdout[-3000:]
    assert "usage events whose credits != fee" in out.stdout
    assert (tmp_path / "home" / "demo" / "report.html").exists()
    # an auditor recomputes it from the topics; a forged entry in the store is found
    poa = [sys.executable, "-m", "poa_stream.cli"]
    audit = subprocess.run(poa + ["audit"], capture_output=True, text=True, env=env, timeout=600)
    assert audit.returncode == 0, (audit.stdout[-3000:], audit.stderr[-3000:])
    assert "the ledger is a function of the input log" in audit.stdout
    forge = subprocess.run(poa + ["sql", "--write", "INSERT INTO reward_ledger (entry_id, epoch, account, role, "
                                  "source, amount, ref_event_id, ts, seq) VALUES ('0forged', 1, 'mallory', "
                                  "'contributor', 'fee', 1000000, 'x', now64(3), 1)"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert forge.returncode == 0, forge.stderr[-2000:]
    audit = subprocess.run(poa + ["audit"], capture_output=True, text=True, env=env, timeout=600)
    assert audit.returncode == 1 and "reward_ledger:" in audit.stdout and "0forged" in audit.stdout, \
        (audit.stdout[-3000:], audit.stderr[-3000:])
    bad = subprocess.run([sys.executable, "-m", "poa_stream.cli", "demo", "--topology", "both"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "--topology must be single or scaled" in bad.stderr
