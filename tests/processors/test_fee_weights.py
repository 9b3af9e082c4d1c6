"""Validator fee weights from a versioned snapshot published at each epoch close (issue 16,
validations stage): a usage in epoch e pays validators by the weights of e - 1's close, so
the order of votes within an epoch moves no payment; a validator earns once a close judged it.
"""
from __future__ import annotations

import json

import pytest
from support.events_factory import LEGAL_DE, contribution, model, usage, validation

from poa_stream.processors.replay import process_all
from poa_stream.settings import Settings

C, V, M, U = "poa.contributions", "poa.validations", "poa.models", "poa.usage"
OTHER_TEXTS = [  # distinct honest texts the validators vote on (none is used by a usage)
    "The committee reviewed the annual budget and approved funding for three new libraries in the northern districts",
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules inside plant chloroplasts",
    "The river flooded twice last spring so the town council voted to raise the levee by two meters before autumn",
    "A balanced diet includes vegetables whole grains lean proteins and enough water to support daily activity levels",
    "Early printing presses used movable metal type which made books cheaper and spread literacy across Europe quickly",
    "Volcanic eruptions release ash and sulfur dioxide that can cool the global climate for several years afterwards",
]


def events(late_votes_minute: int) -> list[tuple[str, bytes]]:
    """Epoch 0 (minutes 0-59): c1 and six other texts, val0..val2 vote with the consensus.
    Epoch 1: val9 (new) accepts c1; val2 rejects the six texts, against the consensus, at
    ``late_votes_minute`` (before or after the usage r1 at minute 70). Epoch 2: usage r2."""
    out = [(C, contribution("c1e", "c1", "alice", "legal-de", LEGAL_DE, 0)),
           (M, model("m1e", "m1", "op", ["legal-de"], minute=1))]
    for k, text in enumerate(OTHER_TEXTS):
        out.append((C, contribution(f"x{k}e", f"x{k}", f"author{k}", "legal-de", text, 2 + k)))
    for v in ("val0", "val1", "val2"):
        out.append((V, validation(f"{v}-c1", v, "c1", "accept", 10)))
        for k in range(len(OTHER_TEXTS)):
            if v != "val2":
                out.append((V, validation(f"{v}-x{k}", v, f"x{k}", "accept", 11 + k)))
    out.append((V, validation("val9-c1", "val9", "c1", "accept", 61)))
    for k in range(len(OTHER_TEXTS)):
        out.append((V, validation(f"val2-x{k}", "val2", f"x{k}", "reject", late_votes_minute)))
    out.append((U, usage("u1", "r1", "m1", 1_000_000, "Answer: " + LEGAL_DE, 70)))
    out.append((U, usage("u2", "r2", "m1", 1_000_000, "Again: " + LEGAL_DE, 130)))
    return out


def _run(tmp_path, name: str, rule: str, late_votes_minute: int):
    home = tmp_path / name
    home.mkdir(parents=True)
    pf = home / "policy.json"
    pf.write_text(json.dumps({"epoch_s": 3600, "validator_fee_weights": rule}))
    return process_all(Settings(home=home / "home", policy_file=pf), events(late_votes_minute))


def validator_credits(res, ref: str) -> dict[str, int]:
    return {r["account"]: r["amount"] for r in res.rows["reward_ledger"]
            if r["ref_event_id"] == ref and r["role"] == "validator"}


def test_vote_order_within_an_epoch_moves_no_payment(tmp_path):
    _, early = _run(tmp_path, "early", "epoch_snapshot", 65)
    _, late = _run(tmp_path, "late", "epoch_snapshot", 75)
    paid = validator_credits(early, "u1")
    assert paid == validator_credits(late, "u1")
    assert set(paid) == {"val0", "val1", "val2"}  # val9 voted in epoch 1: not judged yet
    # the same votes under the v1 rule: val2's contrarian votes before the usage cut its pay
    _, live_early = _run(tmp_path, "live-early", "live", 65)
    _, live_late = _run(tmp_path, "live-late", "live", 75)
    assert validator_credits(live_early, "u1")["val2"] < validator_credits(live_late, "u1")["val2"]
    assert "val9" in validator_credits(live_late, "u1")


def test_snapshot_rows_are_what_the_next_epoch_pays_by(tmp_path):
    core, res = _run(tmp_path, "s", "epoch_snapshot", 65)
    rows = res.rows["validator_weights"]
    by_epoch: dict[int, dict[str, dict]] = {}
    for r in rows:
        by_epoch.setdefault(r["epoch"], {})[r["validator"]] = r
    e0 = min(by_epoch)  # epochs count from the Unix epoch: the scenario's first is e0
    by_epoch = {e - e0: snap for e, snap in by_epoch.items()}
    assert sorted(by_epoch) == [0, 1]
    assert set(by_epoch[0]) == {"val0", "val1", "val2"} and "val9" in by_epoch[1]
    for snap in by_epoch.values():
        for r in snap.values():
            assert r["fee_weight"] == pytest.approx(max(0.0, 2 * r["reliability"] - 1))
    # val2 voted against the consensus in epoch 1: its weight fell at that close
    assert by_epoch[1]["val2"]["fee_weight"] < by_epoch[0]["val2"]["fee_weight"]
    # the split of a usage's validator share follows the snapshot in force (equal stakes)
    for ref, epoch in (("u1", 0), ("u2", 1)):
        paid = validator_credits(res, ref)
        w = {v: r["fee_weight"] for v, r in by_epoch[epoch].items() if r["fee_weight"] > 0}
        assert set(paid) == set(w)
        total = sum(paid.values())
        for v, amount in paid.items():
            assert amount / total == pytest.approx(w[v] / sum(w.values()), abs=1e-5)
    # epoch 1's emission pays val9 too: its close judged it before the split
    emitted = {r["account"] for r in res.rows["reward_ledger"]
               if r["source"] == "emission" and r["role"] == "validator" and r["epoch"] == e0 + 1}
    assert "val9" in emitted
    assert core.fee_weights_epoch == e0 + 1
    assert core.fee_weights == {v: r["fee_weight"] for v, r in by_epoch[1].items()}
