"""Spam detection on REAL data (poa/realdata.py), held-out half only.

The quality thresholds in streams/policy.py were set from the calibration half
(``python bench/quality.py --calibrate``); this test scores the production core
(poa/quality_eval.py runs processors.replay.process_all) on the other half, which nothing
was tuned on, with spam made from those held-out items. It asserts the issue's goals
where they are met: false positives <= 1% per kind (prose in many languages, code,
tables, annotation labels, legal text), before and after validators vote; copies and label
farms caught; and spam that the text statistics miss (word salad, templates) never
accepted or paid without validators. The per-language table is printed (``-s``).
"""
from __future__ import annotations

import pytest

from poa.quality_eval import evaluate, table
from poa.realdata import corpus, split


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


def test_copies_and_label_farms_are_caught(held_out_score):
    s = held_out_score
    assert s.caught["exact_copy"] >= 0.95 * s.spam["exact_copy"]
    assert s.caught["label_farm"] >= 0.95 * s.spam["label_farm"]
    assert s.caught["near_copy"] >= 0.85 * s.spam["near_copy"]  # ~3% of words edited


def test_spam_the_statistics_miss_is_never_accepted(held_out_score):
    """Word salad and templated ads pass the text statistics (see the table), but nothing
    makes them accepted: unvoted they stay pending, their usage credit held in escrow
    (processors/escrow.py); rejected by validators they are forfeited."""
    s = held_out_score
    assert s.spam["word_salad"] and s.spam["templated"]
    assert sum(s.spam_accepted.values()) == 0, dict(s.spam_accepted)
