"""Suspected wash usage flags (processors/wash.py): each reason fires on its pattern and
not just below its threshold; flags of the adversarial worlds (poa/adversarial.py) name
the attacker's operators and never the honest one."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from poa_stream import adversarial as A
from poa_stream.settings import Settings
from poa_stream.processors.replay import process_all
from poa_stream.processors.wash import WashWatch
from poa_stream.streams import topics
from poa_stream.streams.policy import Policy

END = datetime(2026, 1, 1, 23, 59, 59, 999000, tzinfo=timezone.utc)
KEY_A = "11" * 32
KEY_B = "22" * 32


def _close(w: WashWatch, P: Policy, epoch: int = 0) -> dict[tuple[str, str], dict]:
    return {(r["contributor"], r["reason"]): r for r in w.close(epoch, P, END, "e-1", 7)}


def _use(w, op, n, fee=1_000_000, credits=(("c", 1.0),), t0=0.0, dt=60.0, P=Policy(), dn="dn"):
    for k in range(n):
        w.observe(0, op, fee, t0 + k * dt, 0.0, [c for c, _ in credits], [x for _, x in credits],
                  [dn] * len(credits), P.wash_low_fee_micro, P.wash_burst_window_s)


def test_self_dealing_by_account_and_by_signing_key():
    P = Policy(keys={"op": KEY_A, "alt": KEY_A, "other": KEY_B})
    w = WashWatch()
    _use(w, "op", 30, credits=(("op", 0.15), ("alt", 0.15), ("other", 0.7)))
    rows = _close(w, P)
    r = rows[("op", "wash_self_dealing")]
    assert r["score"] == pytest.approx(0.3)
    assert "same account op" in r["detail"] and "same signing key alt" in r["detail"]
    assert r["contribution_id"] == "operator:op" and r["ts"] == END and r["seq"] == 7
    # below the share, or another key: no flag
    w = WashWatch()
    _use(w, "op", 30, credits=(("op", 0.1), ("other", 0.9)))
    assert ("op", "wash_self_dealing") not in _close(w, P)
    w = WashWatch()
    _use(w, "op", 30, credits=(("other", 1.0),))
    assert ("op", "wash_self_dealing") not in _close(w, P)


def test_low_fee_burst_needs_the_events_inside_one_window():
    P = Policy()
    w = WashWatch()
    _use(w, "op", P.wash_burst_events, fee=0, dt=1.0)
    _use(w, "op", 50, fee=5_000_000, t0=3_600.0)
    r = _close(w, P)[("op", "wash_low_fee_burst")]
    assert r["score"] == pytest.approx(P.wash_burst_events / (P.wash_burst_events + 50))
    w = WashWatch()  # one event short
    _use(w, "op", P.wash_burst_events - 1, fee=P.wash_low_fee_micro, dt=1.0)
    _use(w, "op", 30, fee=5_000_000, t0=3_600.0)
    assert ("op", "wash_low_fee_burst") not in _close(w, P)
    w = WashWatch()  # as many low-fee events, spread over the day: not a burst
    _use(w, "op", 200, fee=0, dt=400.0)
    assert ("op", "wash_low_fee_burst") not in _close(w, P)
    w = WashWatch()  # paid just above the threshold: not low-fee
    _use(w, "op", 200, fee=P.wash_low_fee_micro + 1, dt=1.0)
    assert ("op", "wash_low_fee_burst") not in _close(w, P)


def test_closed_loop_needs_another_operator_and_few_owned_accounts():
    P = Policy()
    w = WashWatch()
    _use(w, "honest", 100, credits=(("a", 0.3), ("b", 0.3), ("c", 0.2), ("d", 0.2)))
    _use(w, "loop", 100, credits=(("x", 0.95), ("a", 0.05)))
    rows = _close(w, P)
    assert rows[("loop", "wash_closed_loop")]["score"] == pytest.approx(0.95)
    assert ("honest", "wash_closed_loop") not in rows  # it owns four accounts
    w = WashWatch()  # alone: nothing to compare with
    _use(w, "loop", 100, credits=(("x", 1.0),))
    assert _close(w, P) == {}
    w = WashWatch()  # the other operator credits x as much: x is not owned
    _use(w, "honest", 100, credits=(("x", 0.5), ("a", 0.5)))
    _use(w, "loop", 100, credits=(("x", 1.0),))
    assert ("loop", "wash_closed_loop") not in _close(w, P)
    w = WashWatch()  # a specialised model: only it draws on its datanet, nothing to compare
    _use(w, "honest", 100, credits=(("a", 0.5), ("b", 0.5)))
    _use(w, "niche", 100, credits=(("x", 1.0),), dn="niche")
    assert _close(w, P) == {}
    w = WashWatch()  # a popular text: others quote x at an even share, the operator just more
    _use(w, "honest", 10, credits=(("a", 0.25), ("b", 0.25), ("c", 0.25), ("x", 0.25)))
    _use(w, "popular", 100, credits=(("x", 1.0),))
    assert _close(w, P) == {}
    w = WashWatch()  # ... but a trace of others' credit (below a quarter of an even share) is a loop
    _use(w, "honest", 100, credits=(("a", 0.33), ("b", 0.33), ("c", 0.17), ("d", 0.16), ("x", 0.01)))
    _use(w, "loop", 100, credits=(("x", 1.0),))
    assert set(_close(w, P)) == {("loop", "wash_closed_loop")}
    w = WashWatch()  # too few events for any reason
    _use(w, "honest", 100, credits=(("a", 0.25), ("b", 0.25), ("c", 0.25), ("d", 0.25)))
    _use(w, "loop", P.wash_min_events - 1, fee=0, dt=0.1, credits=(("loop", 1.0),))
    assert _close(w, P) == {}


def test_close_forgets_the_epoch_and_keeps_the_others():
    P = Policy()
    w = WashWatch()
    _use(w, "honest", 100, credits=(("a", 1.0),))
    _use(w, "loop", 100, credits=(("x", 1.0),))
    w.observe(1, "loop", 0, 86_400.0, 86_400.0, ["x"], [1.0], ["dn"], 1000, 600.0)
    assert ("loop", "wash_closed_loop") in _close(w, P, 0)
    assert list(w.epochs) == [1]


EXPECTED = {"fee0": {"wash_low_fee_burst", "wash_closed_loop"},
            "micro": {"wash_low_fee_burst", "wash_closed_loop"},
            "fee1": {"wash_self_dealing", "wash_closed_loop"},
            "spread": {"wash_closed_loop"},
            "sybil": {"wash_closed_loop"}}


@pytest.mark.parametrize("strategy", A.STRATEGIES)
def test_adversarial_worlds_flag_the_attacker_and_never_the_honest_operator(tmp_path, strategy):
    pf = tmp_path / "policy.json"
    pf.write_text(json.dumps(A.policy_for(strategy, 1)))
    s = Settings(home=tmp_path / "home", policy_file=pf)
    _, out = process_all(s, A.world(strategy, 1, True, n_fake=900))
    wash = [f for f in out.rows.get("flags", []) if f["reason"].startswith("wash_")]
    ops = A.attacker_accounts(strategy)
    assert all(f["contributor"] in ops for f in wash), "an honest account was flagged"
    assert {f["reason"] for f in wash} == EXPECTED.get(strategy, set())
    if strategy == "sybil":  # every sybil operator, in every closed epoch
        assert {f["contributor"] for f in wash} == {f"sybil-op-{i}" for i in range(10)}
    n_closed = len(out.rows["epochs"])
    assert n_closed >= 2 and all(f"epoch {e['epoch']}:" in " ".join(f["detail"] for f in wash)
                                 for e in out.rows["epochs"] if wash)
    # flags are published on poa.flags, keyed by operator
    published = [k for t, k, _ in out.messages if t == topics.FLAGS and k.startswith("operator:")]
    assert len(published) == len(wash)
    _, base = process_all(s, A.world(strategy, 1, False, n_fake=900))
    assert not [f for f in base.rows.get("flags", []) if f["reason"].startswith("wash_")]
