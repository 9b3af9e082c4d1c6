"""Statuses re-evaluated at every epoch close (processors/handlers_validations.py
``_refresh_statuses``): a status does not freeze at a contribution's last vote."""
from collections import Counter

from poa_stream.scenario import generate
from poa_stream.processors.core import Core
from poa_stream.processors.replay import process_all, step

SEED = 5


def records(scale=1.0):
    return [(t, line.encode()) for t, line in generate(seed=SEED, scale=scale).records]


def test_right_after_each_epoch_close_statuses_follow_the_posteriors(settings):
    core, closes = Core(settings), 0
    for topic, raw in records(0.5):
        res = step(core, topic, raw, 1e10)
        res.extend(core.release(None))
        if res.rows.get("epochs"):
            closes += 1
            later = _voted_after_close(res, core)
            for c in core.by_idx:
                if c.voters and c.status not in ("duplicate", "spam") and c.idx not in later:
                    assert c.status == core.ds.status(c.idx), c.contribution_id
            # one contributions row per contribution and seq (the refresh replaces, never doubles)
            keys = Counter((r["contribution_id"], r["seq"]) for r in res.rows.get("contributions", []))
            assert max(keys.values(), default=1) == 1
    assert closes >= 2


def _voted_after_close(res, core) -> set[int]:
    """Contributions voted on by events released after the closing one in the same step."""
    closing = res.rows["epochs"][0]["seq"]
    return {core.contribs[v["contribution_id"]].idx for v in res.rows.get("validations", [])
            if v["seq"] > closing}


def test_the_sweep_frees_honest_work_stuck_in_rejected(settings):
    """Measured on seed 5: without the sweep 3 honest contributions end `rejected`; with it
    1, and fewer are left unaccepted; no copy or farm upload becomes eligible (the
    generator's low-quality texts are left to the validators: see tests/test_quality_realdata.py)."""
    truth = generate(seed=SEED, scale=1.0).truth["contributions"]

    def outcome(passes):
        core, _ = process_all(settings.model_copy(update={"epoch_sweep_passes": passes}), records())
        honest = Counter(c.status for cid, c in core.contribs.items() if truth.get(cid, {}).get("class") == "honest")
        bad_eligible = sum(c.status not in ("duplicate", "rejected", "spam") for cid, c in core.contribs.items()
                           if truth.get(cid, {}).get("class") in ("exact_dup", "near_dup", "farm"))
        return honest, bad_eligible
    before, bad_before = outcome(0)
    after, bad_after = outcome(1)
    assert before["rejected"] > 0 and after["rejected"] < before["rejected"]
    assert after["pending"] + after["rejected"] < before["pending"] + before["rejected"]
    assert bad_after <= bad_before
