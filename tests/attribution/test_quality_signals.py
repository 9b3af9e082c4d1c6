"""attribution.quality: kernels vs .py_func and brute force; flags on the seeded scenario."""
import json
import math
import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from poa_stream.attribution.quality import (DEFAULT_THRESHOLDS, Familiarity, QualitySignals, bigram_slots,
                                 is_low_quality, low_quality_reasons, sentence_ends, signals, token_stats)
from poa_stream.attribution.text import token_hashes
from poa_stream.scenario import generate

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


# --- word order (attribution.quality.OrderModel): word salad is familiar words in no order

def _brute_ordered(toks, ref_words, ref_pairs, learned_words, learned_pairs):
    from poa_stream.attribution.quality import Reference
    w, p = Reference.keys_of(toks)
    kw = [int(x) in ref_words or int(x) in learned_words for x in w]
    known = seen = 0
    for i in range(len(p)):
        if kw[i] and kw[i + 1]:
            known += 1
            seen += int(p[i]) in ref_pairs or int(p[i]) in learned_pairs
    return known, seen


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=0, max_size=40), st.lists(st.integers(0, 30), max_size=60),
       st.lists(st.integers(0, 30), max_size=60))
def test_ordered_pairs_matches_brute_force_and_py_func(text, ref_text, learned_text):
    from poa_stream.attribution.quality import OrderModel, Reference, ordered_pairs
    toks = np.array(text, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    rt = np.array(ref_text, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    lt = np.array(learned_text, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    rw, rp = Reference.keys_of(rt)
    m = OrderModel(Reference(rw, rp), word_bits=26, pair_bits=26)  # exact at this size (no collisions)
    m.learn(lt)
    lw, lp = Reference.keys_of(lt)
    want = _brute_ordered(toks, set(rw.tolist()), set(rp.tolist()), set(lw.tolist()), set(lp.tolist()))
    args = (toks, m.reference.words, m.reference.pairs, m.words, m.pairs)
    assert tuple(ordered_pairs(*args)) == want
    assert tuple(ordered_pairs.py_func(*args)) == want


def test_order_model_tells_word_salad_from_text():
    import random
    from poa_stream.attribution.quality import OrderModel
    texts = [f"the {w} of the system is used to read the {v} and to write it back when the user asks for it"
             for w in ("state", "file", "name", "size", "list") for v in ("data", "table", "entry")]
    m = OrderModel()
    for t in texts[:10]:
        m.learn(token_hashes(t))
    fresh = token_hashes("the name of the system is used to read the table and to write it back")
    assert m.ordered_share(fresh) > 0.9
    words = " ".join(texts).split()
    salad = token_hashes(" ".join(random.Random(3).sample(words, 30)))
    assert m.ordered_share(salad) < 0.5 * m.ordered_share(fresh)
    # unknown words are not judged: a new topic is NaN, not "scrambled"
    assert math.isnan(m.ordered_share(token_hashes("zeta omicron lambda kappa sigma tau upsilon phi chi psi omega")))


def test_shipped_reference_catches_salad_of_common_words():
    """The shipped reference (built from the calibration half of real corpora) judges a
    datanet from its first text on: a real-looking sentence passes, its words shuffled do not."""
    import random
    from poa_stream.attribution.quality import OrderModel, Reference
    m = OrderModel(Reference.load())
    assert m.reference.words.shape[0] > 10_000 and m.reference.pairs.shape[0] > 50_000
    text = ("This package contains the development files for the library. It is used to build "
            "programs that use the library and provides the header files and the documentation.")
    words = text.split()
    random.Random(5).shuffle(words)
    ok, bad = m.ordered_share(token_hashes(text)), m.ordered_share(token_hashes(" ".join(words)))
    assert ok > 0.4 and bad < ok / 2, (ok, bad)
    sig = signals(token_hashes(" ".join(words)), " ".join(words).encode(), order=m)
    th = DEFAULT_THRESHOLDS.__class__(min_ordered=(ok + bad) / 2, decisive=("scrambled",))
    reasons = low_quality_reasons(sig, th)
    assert [r for r, _ in reasons] == ["scrambled"] and is_low_quality(reasons, th)
    assert not is_low_quality(reasons, DEFAULT_THRESHOLDS.__class__(min_ordered=(ok + bad) / 2))  # 1 < 2 reasons


def test_text_form_ragged_tables_and_tab_indented_code():
    from poa_stream.attribution.quality import text_form
    csv = ("version,codename,series,created,release,eol,eol-server,eol-esm,eol-legacy\n"
           "17.04,Zesty Zapus,zesty,2016-10-13,2017-04-13,2018-01-13\n"
           "18.04 LTS,Bionic Beaver,bionic,2017-10-19,2018-04-26,2023-05-31,2023-05-31,2028-04-26,2030-04-30\n"
           "18.10,Cosmic Cuttlefish,cosmic,2018-04-26,2018-10-18,2019-07-18\n"
           "19.04,Disco Dingo,disco,2018-10-18,2019-04-18,2020-01-23\n")
    assert text_form(csv) == "table"
    tab = "AD\t+4230+00131\tEurope/Andorra\nAR\t-3253-06849\tAmerica/Mendoza\tMendoza (MZ)\n" * 3
    assert text_form(tab) == "table"
    prose = ("Dia is a program, written in GTK+, for drawing diagrams.\nIt can export to many formats, "
             "such as EPS, SVG and PNG.\nIt is free software, released under the GPL.\n"
             "Shapes are kept in simple XML files, so new ones are easy to add.\n")
    assert text_form(prose) == "prose"


def test_text_form_shell_scripts_are_code():
    """A script with an interpreter line, and shell assignments without spaces (NAME=value),
    are code: the sentence checks (run_on) must not judge them as prose."""
    from poa_stream.attribution.quality import text_form
    script = ('#! /bin/sh\n\nset -e\n\nCONF=/etc/fonts/local.conf\n\n# links created in postinst\n'
              'unhinted="10-unhinted.conf"\nautohint="10-autohint.conf"\nhintnone="10-hinting-none.conf"\n')
    assert text_form(script) == "code"
    assert text_form(script.split("\n", 1)[1]) == "code"  # without the interpreter line too
    config = "PATH=/usr/bin\nLANG=C.UTF-8\nHOME=/root\nSHELL=/bin/sh\nTERM=xterm\n"
    assert text_form(config) in ("code", "table")
    prose = "Set the option to a value.\nThe default is fine for most users.\nSee the manual.\n" * 2
    assert text_form(prose) == "prose"
