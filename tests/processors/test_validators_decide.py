"""Signals are evidence, validators decide (issue "fair rewards"): a contribution the text
statistics mark spam is accepted when validators accept it; annotation agreement is not a
duplicate nor a farm; a label farm (bursts of identical labels on several items) is."""
from __future__ import annotations

import json

from support.events_factory import LEGAL_DE, LEGAL_FR, MEDICAL, contribution, model, usage, validation  # noqa: F401

from poa_stream.settings import Settings
from poa_stream.processors.replay import process_all

C, V, M, U = "poa.contributions", "poa.validations", "poa.models", "poa.usage"
# a real table: the first rows of tzdata's zone1970.tab (public domain)
TABLE = "\n".join([
    "AD\t+4230+00131\tEurope/Andorra", "AE,OM,RE,SC,TF\t+2518+05518\tAsia/Dubai\tCrozet",
    "AF\t+3431+06912\tAsia/Kabul", "AL\t+4120+01950\tEurope/Tirane", "AM\t+4011+04430\tAsia/Yerevan",
    "AQ\t-6617+11031\tAntarctica/Casey\tCasey", "AQ\t-6835+07758\tAntarctica/Davis\tDavis",
    "AQ\t-6736+06253\tAntarctica/Mawson\tMawson", "AQ\t-6448-06406\tAntarctica/Palmer\tPalmer",
    "AQ\t-6734-06808\tAntarctica/Rothera\tRothera", "AQ\t-720041+0023206\tAntarctica/Troll\tTroll",
    "AR\t-3436-05827\tAmerica/Argentina/Buenos_Aires\tBuenos Aires (BA, CF)",
    "AR\t-3124-06411\tAmerica/Argentina/Cordoba\tmost areas: CB, CC, CN, ER, FM, MN, SE, SF",
    "AR\t-2447-06525\tAmerica/Argentina/Salta\tSalta (SA, LP, NQ, RN)",
    "AR\t-2411-06518\tAmerica/Argentina/Jujuy\tJujuy (JY)", "AR\t-2649-06513\tAmerica/Argentina/Tucuman\tTucuman (TM)",
])
VALIDATORS = [f"val{k}" for k in range(4)]
# Lincoln, 1863, punctuation removed (one 80-word "sentence")
GETTYSBURG = ("Four score and seven years ago our fathers brought forth on this continent a new nation "
              "conceived in Liberty and dedicated to the proposition that all men are created equal "
              "Now we are engaged in a great civil war testing whether that nation or any nation so "
              "conceived and so dedicated can long endure We are met on a great battle-field of that "
              "war We have come to dedicate a portion of that field as a final resting place")


def _settings(tmp_path, **policy) -> Settings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    pf = tmp_path / "policy.json"
    pf.write_text(json.dumps(policy))
    return Settings(home=tmp_path / "home", policy_file=pf)


def _votes(cid: str, verdicts, minute: int) -> list:
    return [(V, validation(f"v-{cid}-{k}", v, cid, verdict, minute + k))
            for k, (v, verdict) in enumerate(zip(VALIDATORS, verdicts))]


# real prose, not from our generator (Darwin 1859; Melville 1851; Austen 1813)
PROSE = [
    "When we look to the individuals of the same variety or sub-variety of our older cultivated "
    "plants and animals one of the first points which strikes us is that they generally differ "
    "more from each other than do the individuals of any one species or variety in a state of nature.",
    "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my "
    "purse, and nothing particular to interest me on shore, I thought I would sail about a little and "
    "see the watery part of the world.",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be "
    "in want of a wife. However little known the feelings or views of such a man may be on his first "
    "entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families.",
    LEGAL_DE, LEGAL_FR, MEDICAL,
]


def _calibrate_validators(minute: int = 0) -> list:
    """Ordinary prose every validator accepts: the validators earn a record."""
    ev = []
    for i, text in enumerate(PROSE):
        cid = f"warm{i}"
        ev.append((C, contribution(f"w{i}", cid, f"author{i}", "d", text, minute)))
        ev += _votes(cid, ["accept"] * 4, minute + 1)
    return ev


def test_a_table_is_not_judged_as_prose(tmp_path):
    """A real table has no sentences: the sentence and familiarity reasons do not apply to
    it (attribution.quality.text_form), so it is not spam, only left to the validators."""
    core, out = process_all(_settings(tmp_path), _calibrate_validators() + [
        (C, contribution("t1", "table", "tabler", "d", TABLE, 30))])
    assert core.contribs["table"].status == "pending"
    assert not [f for f in out.rows.get("flags", []) if f["contribution_id"] == "table"]


def test_validators_overrule_the_text_statistics(tmp_path):
    """Under a strict policy (one reason is spam; sentences of 60 words at most) the table
    flattened to one line and an unpunctuated speech are "spam"; four validators accepting
    the first make it accepted and paid like any other; the second, mostly rejected, stays
    spam."""
    strict = {"quality_min_reasons": 1, "quality_max_words_per_sentence": 60.0}
    flat = " ".join(TABLE.split("\n"))
    ev = _calibrate_validators() + [
        (C, contribution("t1", "table", "tabler", "d", flat, 30)),
        (C, contribution("t2", "legal", "lawyer", "d", GETTYSBURG, 31)),
    ]
    core, out = process_all(_settings(tmp_path, **strict), ev)
    assert core.contribs["table"].status == "spam" and core.contribs["legal"].status == "spam"
    # one sentence of table cells: run on, and no word order of prose (scrambled)
    assert {f["reason"] for f in out.rows["flags"] if f["contribution_id"] == "table"} == {"run_on", "scrambled"}
    ev += _votes("table", ["accept"] * 4, 40) + _votes("legal", ["accept", "reject", "reject", "reject"], 40)
    ev += [(M, model("m1", "M", "op", ["d"], minute=50)),
           (U, usage("u1", "r1", "M", 1_000_000, "zones: " + " ".join(TABLE.split("\n")[11:13]), 51))]
    core, out = process_all(_settings(tmp_path / "b", **strict), ev)
    assert core.contribs["table"].status == "accepted"  # validators decided
    assert core.contribs["legal"].status == "spam"  # the signal stands without acceptance
    paid = {r["account"] for r in out.rows["reward_ledger"] if r["ref_event_id"] == "u1" and r["role"] == "contributor"}
    assert paid == {"tabler"}


def test_annotation_agreement_is_not_a_duplicate_nor_a_farm(tmp_path):
    """Four annotators give the same label to each of 12 items at their own pace (13 to 37
    minutes apart): agreement. Nothing is a duplicate or flagged; validators accept all."""
    s = _settings(tmp_path)
    ev, minute = [], 0
    labels = [f"image {k:03d}: label=tabby cat, indoor, daylight" for k in range(12)]
    for a in range(4):
        for k, text in enumerate(labels):
            minute = 30 * k + 13 + 8 * a  # annotator a labels item k
            cid = f"ann{a}-{k}"
            ev.append((C, contribution(f"a{a}-{k}", cid, f"annotator{a}", "img", text, minute,
                                       kind="annotation")))
            ev += [(V, validation(f"va{a}-{k}-{j}", v, cid, "accept", minute + 1 + j))
                   for j, v in enumerate(VALIDATORS)]
    core, out = process_all(s, ev)
    statuses = {c.status for c in core.by_idx}
    assert statuses == {"accepted"}, statuses
    assert not [f for f in out.rows.get("flags", []) if f["reason"] in
                ("exact_duplicate", "near_duplicate", "sybil_farm", "label_farm")]


def test_a_label_farm_is_bursts_on_several_items(tmp_path):
    """Five accounts post the same labels within seconds, item after item: a label farm.
    One burst alone is not enough; the same account repeating itself is a duplicate."""
    s = _settings(tmp_path)
    ev = []
    for k in range(2):
        for a in range(5):
            ev.append((C, contribution(f"f{a}-{k}", f"farm{a}-{k}", f"bot{a}", "img",
                                       f"image {k:03d}: label=dog, outdoor", 60 * k,
                                       kind="annotation", ts=f"2026-01-01T{k:02d}:00:{10 + a:02d}Z")))
    core, out = process_all(s, ev[:5])
    assert not [f for f in out.rows.get("flags", []) if f["reason"] == "label_farm"]  # one burst
    core, out = process_all(_settings(tmp_path / "b"), ev)
    flagged = {f["contributor"] for f in out.rows["flags"] if f["reason"] == "label_farm"}
    assert flagged == {f"bot{a}" for a in range(5)}
    assert all(core.contribs[f"farm{a}-{k}"].status == "spam" for a in range(5) for k in range(2))
    ev2 = [(C, contribution("s1", "same1", "solo", "img", "image 007: label=bird", 0, kind="annotation")),
           (C, contribution("s2", "same2", "solo", "img", "image 007: label=bird", 5, kind="annotation"))]
    core, _ = process_all(_settings(tmp_path / "c"), ev2)
    assert core.contribs["same2"].status == "duplicate"
