"""Spam detection on REAL data (poa/realdata.py), held-out half only.

The quality thresholds in streams/policy.py were set from the calibration half
(``python bench/quality.py --calibrate``); this test scores the production core
(poa/quality_eval.py runs processors.replay.process_all) on the other half, which nothing
was tuned on (the word-order reference model, attribution/data/reference_ngrams.npz, was
built from calibration items only), with spam made from those held-out items. It asserts
the issue's goals: false positives <= 1% per kind (prose in many languages, code, tables,
annotation labels, legal text), before and after validators vote; recall >= 0.95 for every
kind of injected spam (exact and lightly edited copies, templated ads, word salad, label
farms) at upload, before any vote; and no spam ever accepted. The per-language table is
printed (``-s``).
"""
from __future__ import annotations

import pytest

from poa_stream.quality_eval import evaluate, table
from poa_stream.realdata import corpus, split


@pytest.fixture(scope="module")
def held_out_score(tmp_path_factory):
    _, held = split(corpus(per_group=120))
    kinds = {it.kind for it in held}
    assert kinds == {"prose", "code", "table", "labels", "legal"}, kinds
    assert len({it.lang for it in held if it.kind == "prose"}) >= 10
    return evaluate(held, seed=1, spam_per_kind=100, home=tmp_path_factory.mktemp("quality"))


def test_false_positives_at_most_one_percent_per_kind(held_out_score):
    s = held_out_score
    print("\n" + table(s))
    for kind, (fp, n) in s.by_kind(s.fp_before).items():
        assert n >= 40, f"{kind}: only {n} held-out items"
        assert fp <= 0.01 * n, f"{kind}: {fp} of {n} honest items marked spam or duplicate at upload"
    for kind, (fp, n) in s.by_kind(s.fp_after).items():
        assert fp <= 0.01 * n, f"{kind}: {fp} of {n} honest items not accepted after unanimous votes"


@pytest.mark.parametrize("kind", ["exact_copy", "near_copy", "templated", "word_salad", "label_farm"])
def test_every_kind_of_spam_is_caught_at_upload(held_out_score, kind):
    s = held_out_score
    assert s.spam[kind] >= 20, (kind, s.spam[kind])
    assert s.caught[kind] >= 0.95 * s.spam[kind], f"{kind}: {s.caught[kind]} of {s.spam[kind]} caught"


def test_spam_is_never_accepted(held_out_score):
    """Whatever the signals miss stays pending without votes (its usage credit held in
    escrow, processors/escrow.py) and is forfeited when validators reject it."""
    s = held_out_score
    assert sum(s.spam_accepted.values()) == 0, dict(s.spam_accepted)
