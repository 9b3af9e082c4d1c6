"""attribution.quality: kernels vs .py_func and brute force; flags on the seeded scenario."""
import json
import math
import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from attribution.quality import (DEFAULT_THRESHOLDS, Familiarity, QualitySignals, bigram_slots,
                                 is_low_quality, low_quality_reasons, sentence_ends, signals, token_stats)
from attribution.text import token_hashes
from poa.scenario import generate

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

toks = st.lists(st.integers(0, 6), max_size=60).map(lambda x: np.asarray(x, dtype=np.uint64) * np.uint64(2**61 + 7))


def ref_stats(t):
    n = len(t)
    if n == 0:
        return math.nan, math.nan
    ent = -sum(k / n * math.log2(k / n) for k in Counter(t.tolist()).values())
    if n < 3:
        return ent, math.nan
    grams = [tuple(t[i:i + 3].tolist()) for i in range(n - 2)]
    cnt = Counter(grams)
    return ent, sum(1 for g in grams if cnt[g] > 1) / len(grams)


@settings(max_examples=200, deadline=None)
@given(t=toks)
def test_token_stats_reference_and_py_func(t):
    got, ref, py = token_stats(t), ref_stats(t), token_stats.py_func(t)
    for x, y, z in zip(got, ref, py):
        assert (math.isnan(x) and math.isnan(y) and math.isnan(z)) or (abs(x - y) < 1e-9 and abs(x - z) < 1e-12)


def ref_ends(text: str) -> int:
    return len(re.findall(r"[.!?](?=[\s\"')\]]|$)", text)) + len(re.findall("[。！？]", text))


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab .!?\"')]\n\t1。！？ü")), max_size=50))
def test_sentence_ends_reference_and_py_func(text):
    buf = np.frombuffer(text.encode(), dtype=np.uint8)
    assert sentence_ends(buf) == ref_ends(text) == sentence_ends.py_func(buf)


@settings(max_examples=50, deadline=None)
@given(t=toks, domain=st.integers(0, 3))
def test_bigram_slots_py_func_and_range(t, domain):
    got = bigram_slots(t, domain, 12)
    assert np.array_equal(got, bigram_slots.py_func(t, domain, 12))
    assert got.shape == (max(0, len(t) - 1),) and (got.size == 0 or (got.min() >= 0 and got.max() < 4096))


def test_familiarity_cold_learn_and_domains():
    fam = Familiarity(bits=16, warm_bigrams=10)
    a = token_hashes("the patient reduces the dose in acute cases while the clinician reviews the scan")
    b = token_hashes("quantum gravity predicts seven unusual banana orbits across distant purple galaxies")
    assert math.isnan(fam.score(a)) and not fam.warm
    fam.learn(a)
    assert fam.filled == len(set(bigram_slots(a, 0, 16).tolist())) and fam.warm
    assert fam.score(a) == 1.0 and fam.score(b) == 0.0
    assert math.isnan(fam.score(a, domain=1))  # each domain warms on its own texts
    fam.learn(b, domain=1)
    assert fam.is_warm(1) and fam.score(a, domain=1) == 0.0 and fam.score(b, domain=1) == 1.0
    assert math.isnan(fam.score(a[:5]))  # under MIN_BIGRAMS
    with pytest.raises(ValueError, match="bits"):
        Familiarity(bits=40)


def test_signals_and_reasons_on_simple_texts():
    text = "Buy now deal! " * 30
    sig = signals(token_hashes(text), text.encode())
    assert sig.tokens == 90 and sig.words_per_sentence == 3.0 and sig.repetition == 1.0
    assert abs(sig.entropy_bits - math.log2(3)) < 1e-9 and sig.compression < 0.2
    reasons = dict(low_quality_reasons(sig))
    assert list(reasons) == ["compressible", "repetitive", "low_entropy", "fragmented"]
    assert all(0 < s <= 1 for s in reasons.values()) and is_low_quality(list(reasons.items()))
    short = signals(token_hashes("ok fine"), b"ok fine")
    assert low_quality_reasons(short) == [("too_short", pytest.approx(0.75))]
    assert math.isnan(signals(np.zeros(0, np.uint64), b"").compression)
    clean = QualitySignals(tokens=150, compression=0.35, repetition=0.2, entropy_bits=6.0,
                           entropy_norm=0.8, words_per_sentence=11.0, familiarity=math.nan)
    assert low_quality_reasons(clean) == [] and not is_low_quality([("run_on", 0.5)])


@pytest.fixture(scope="module")
def scenario_flags():
    sc = generate(seed=7)
    truth = sc.truth["contributions"]
    fam, out, seen = Familiarity(), [], set()
    for topic, raw in sc.records:
        try:
            o = json.loads(raw)
        except ValueError:
            continue
        cid = o.get("contribution_id")
        if topic != "poa.contributions" or cid not in truth or cid in seen or not isinstance(o.get("content"), str):
            continue
        seen.add(cid)
        t = token_hashes(o["content"])
        reasons = low_quality_reasons(signals(t, o["content"].encode(), fam))
        if not reasons:  # only clean texts teach the familiarity model
            fam.learn(t)
        out.append((truth[cid]["class"], reasons))
    return out


def test_scenario_low_quality_precision_recall(scenario_flags):
    flagged = [cls for cls, r in scenario_flags if is_low_quality(r)]
    n_lq = sum(cls == "low_quality" for cls, _ in scenario_flags)
    precision = sum(c == "low_quality" for c in flagged) / len(flagged)
    recall = sum(c == "low_quality" for c in flagged) / n_lq
    assert precision >= 0.95 and recall >= 0.9, (precision, recall)


def test_scenario_honest_texts_rarely_flagged(scenario_flags):
    honest = [r for cls, r in scenario_flags if cls == "honest"]
    assert sum(is_low_quality(r) for r in honest) <= 0.01 * len(honest)
    assert sum(bool(r) for r in honest) <= 0.05 * len(honest)  # even single reasons are rare
    assert DEFAULT_THRESHOLDS.min_reasons == 2
