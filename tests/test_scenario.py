"""The seeded scenario generator: determinism, contract v1 validity and that its ground truth holds.

Everything the truth claims is re-checked here by brute force, independently of poa.scenario's
own helpers (tokenizer, shingles, Jaccard, lineage).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from poa_stream.scenario import Scenario, generate, write

ROOT = Path(__file__).resolve().parents[1]
TOPICS = {"contribution": "poa.contributions", "validation": "poa.validations",
          "model": "poa.models", "usage": "poa.usage"}
TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
WORD = re.compile(r"[^\W_]+")
REQUIRED = {
    "contribution": {"contribution_id": str, "contributor": str, "datanet": str, "kind": str, "content": str},
    "validation": {"validator": str, "contribution_id": str, "verdict": str},
    "model": {"model_id": str, "operator": str, "method": str, "datanets": list},
    "usage": {"request_id": str, "model_id": str, "fee": int, "output": str},
}
MIB = 1 << 20


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _unit(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1


def problem(raw: str) -> str | None:
    """Why a raw line breaks contract v1 (None when it is valid). Independent of streams.events."""
    try:
        e = json.loads(raw)
    except json.JSONDecodeError:
        return "invalid_json"
    typ = e.get("type")
    if typ not in REQUIRED:
        return "unknown_type"
    for key, kind in {"event_id": str, "ts": str, **REQUIRED[typ]}.items():
        if key not in e:
            return "missing_field"
        if not isinstance(e[key], kind) or (kind is int and not _int(e[key])):
            return "wrong_type"
    if not TS.match(e["ts"]):
        return "bad_timestamp"
    try:
        datetime.fromisoformat(e["ts"].replace("Z", "+00:00"))
    except ValueError:
        return "bad_timestamp"
    if typ == "contribution":
        if e["kind"] not in ("dataset", "annotation", "knowledge", "feedback"):
            return "wrong_type"
        if len(e["content"].encode()) > MIB:
            return "oversize"
        if not _int(e.get("stake", 0)) or e.get("stake", 0) < 0 or not isinstance(e.get("license", ""), str):
            return "wrong_type"
    elif typ == "validation":
        if e["verdict"] not in ("accept", "reject") or not _unit(e.get("quality", 0)) or not _int(e.get("stake", 0)):
            return "wrong_type"
    elif typ == "model":
        if e["method"] not in ("pretrain", "finetune", "lora", "distill", "merge"):
            return "wrong_type"
        if not isinstance(e.get("base_models", []), list) or not _unit(e.get("inherit", 0)):
            return "wrong_type"
        if not all(isinstance(d, dict) and isinstance(d.get("datanet"), str) and isinstance(d.get("weight"), float)
                   and d["weight"] > 0 for d in e["datanets"]):
            return "wrong_type"
    else:
        if e["fee"] < 0:
            return "negative_fee"
        if len(e["output"].encode()) > MIB:
            return "oversize"
        infl = e.get("influence", [])
        if not isinstance(infl, list) or not all(
                isinstance(i.get("contribution_id"), str) and isinstance(i.get("score"), (int, float))
                and not isinstance(i.get("score"), bool) and i["score"] >= 0 for i in infl):
            return "wrong_type"
    return None


_IDS: dict[tuple, int] = {}


def shingles(text: str) -> set[int]:
    """Word 5-gram shingles (interned as ints so that brute-force set algebra is quick)."""
    w = WORD.findall(text.casefold())
    return {_IDS.setdefault(tuple(w[i:i + 5]), len(_IDS)) for i in range(max(1, len(w) - 4))}


def jac(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


@pytest.fixture(scope="module")
def scen() -> Scenario:
    return generate(seed=7)


@pytest.fixture(scope="module")
def parsed(scen):
    """Valid events in first-delivery order: (index, event dict), plus maps by id."""
    skip = {m["index"] for m in scen.truth["malformed"]} | {r["index"] for r in scen.truth["redeliveries"]}
    events = [(i, json.loads(raw)) for i, (_, raw) in enumerate(scen.records) if i not in skip]
    contribs = {e["contribution_id"]: (i, e) for i, e in events if e["type"] == "contribution"}
    models = {e["model_id"]: (i, e) for i, e in events if e["type"] == "model"}
    return events, contribs, models


def _digest(records) -> str:
    return hashlib.sha256("\n".join(t + "\t" + r for t, r in records).encode()).hexdigest()


def test_determinism(scen):
    """Same seed: identical records and truth, also in another process with another str hash seed."""
    code = ("import hashlib, json; from poa.scenario import generate; s = generate(seed=7)\n"
            "print(hashlib.sha256('\\n'.join(t + '\\t' + x for t, x in s.records).encode()).hexdigest())\n"
            "print(hashlib.sha256(json.dumps(s.truth, sort_keys=True).encode()).hexdigest())")
    env = dict(os.environ, PYTHONHASHSEED="12345")  # this process normally runs with a random one
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    truth_digest = hashlib.sha256(json.dumps(scen.truth, sort_keys=True).encode()).hexdigest()
    assert out.stdout.split() == [_digest(scen.records), truth_digest]
    other = generate(seed=8)
    assert other.records != scen.records and other.truth["accounts"] != scen.truth["accounts"]


def test_sizes_and_mix(scen):
    recs, truth = scen.records, scen.truth
    assert 3_000 <= len(recs) <= 5_000
    assert {t for t, _ in recs} == set(TOPICS.values())
    usage = sum(1 for t, _ in recs if t == "poa.usage")
    assert 0.35 <= usage / len(recs) <= 0.45
    assert 20 <= len(truth["malformed"]) <= 40
    assert 8 <= len(truth["redelivered_event_ids"]) <= 12
    assert truth["counts"]["records"] == len(recs)
    roles = list(truth["accounts"].values())
    assert roles.count("honest") >= 25 and roles.count("spammer") >= 4 and roles.count("farm") >= 10
    assert (roles.count("validator_honest"), roles.count("validator_lazy"), roles.count("validator_colluding")) \
        == (6, 3, 3)
    assert len(set(c["datanet"] for c in truth["contributions"].values())) >= 4
    small = generate(seed=7, scale=0.3)
    assert len(small.records) < len(recs) / 2
    assert all(problem(raw) is None for i, (_, raw) in enumerate(small.records)
               if i not in {m["index"] for m in small.truth["malformed"]})


def test_valid_records_follow_contract_v1(scen, parsed):
    events, _, _ = parsed
    bad = {m["index"] for m in scen.truth["malformed"]}
    ids = []
    for i, (topic, raw) in enumerate(scen.records):
        if i in bad:
            continue
        assert problem(raw) is None, (i, raw[:200])
        e = json.loads(raw)
        assert topic == TOPICS[e["type"]]
        assert raw == json.dumps(e, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
        ids.append(e["event_id"])
        if e["type"] == "usage":
            assert _int(e["fee"]) and 0 <= e["fee"] <= 2_000_000
    assert len(set(ids)) == len(ids) - len(scen.truth["redeliveries"])
    fees = [e["fee"] for _, e in events if e["type"] == "usage"]
    assert fees.count(0) >= 3 and max(fees) > 100_000
    assert sum(1 for _, e in events if e["type"] == "usage" and e.get("influence")) >= 50
    assert any(e.get("license") for _, e in events if e["type"] == "contribution")
    assert any(e.get("stake") for _, e in events if e["type"] == "contribution")
    assert {e.get("kind") for _, e in events if e["type"] == "contribution"} == \
        {"dataset", "annotation", "knowledge", "feedback"}


def test_malformed_records_match_truth(scen):
    found = {i: problem(raw) for i, (_, raw) in enumerate(scen.records) if problem(raw) is not None}
    truth = {m["index"]: m for m in scen.truth["malformed"]}
    assert set(found) == set(truth)
    for i, m in truth.items():
        assert scen.records[i][0] == m["topic"] in TOPICS.values()
        if m["reason"] in ("invalid_json", "negative_fee", "unknown_type", "oversize"):
            assert found[i] == m["reason"]
    reasons = [m["reason"] for m in truth.values()]
    assert set(reasons) == {"invalid_json", "missing_field", "negative_fee", "fractional_fee", "unknown_type",
                            "bad_timestamp", "oversize", "wrong_type"}
    assert reasons.count("oversize") == 1
    big = [len(raw.encode()) for _, raw in scen.records if len(raw) > 100_000]
    assert len(big) == 1 and 1.05 * MIB < big[0] < 1.2 * MIB
    positions = sorted(truth)
    assert positions[0] < len(scen.records) / 4 and positions[-1] > 3 * len(scen.records) / 4  # spread out


def test_malformed_records_agree_with_the_decoder(scen):
    events = pytest.importorskip("poa_stream.streams.events")
    bad = {m["index"] for m in scen.truth["malformed"]}
    for i, (_, raw) in enumerate(scen.records):
        if i in bad:
            with pytest.raises(events.EventError):
                events.decode_event(raw)
        else:
            events.decode_event(raw)


def test_redeliveries_and_time_order(scen):
    truth = scen.truth
    for r in truth["redeliveries"]:
        assert r["original_index"] < r["index"]
        assert scen.records[r["index"]] == scen.records[r["original_index"]]
        assert json.loads(scen.records[r["index"]][1])["event_id"] == r["event_id"]
    assert [r["event_id"] for r in truth["redeliveries"]] == truth["redelivered_event_ids"]
    skip = ({m["index"] for m in truth["malformed"]} | {r["index"] for r in truth["redeliveries"]}
            | {x["index"] for x in truth["late"]})
    ts = [json.loads(raw)["ts"] for i, (_, raw) in enumerate(scen.records) if i not in skip]
    assert ts == sorted(ts)
    first, last = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (ts[0], ts[-1]))
    assert (last - first).days >= 2  # several daily epochs of event time
    for x in truth["late"]:
        prev = json.loads(scen.records[x["index"] - 1][1]) if x["index"] - 1 not in skip else None
        assert json.loads(scen.records[x["index"]][1])["type"] == "usage"
        assert prev is None or prev["ts"] >= json.loads(scen.records[x["index"]][1])["ts"]


def test_references_are_produced_first(scen, parsed):
    events, contribs, models = parsed
    seen: set[str] = set()
    votes: dict[str, int] = {}
    for _, e in events:
        if e["type"] == "contribution":
            seen.add(e["contribution_id"])
        elif e["type"] == "model":
            assert all(b in seen for b in e.get("base_models", []))
            seen.add(e["model_id"])
        elif e["type"] == "validation":
            assert e["contribution_id"] in seen
            votes[e["contribution_id"]] = votes.get(e["contribution_id"], 0) + 1
        else:
            assert e["model_id"] in seen
            assert all(c in seen for c in scen.truth["usage"][e["request_id"]]["contribution_ids"])
    assert set(votes) == set(contribs) and all(3 <= v <= 5 for v in votes.values())


def test_duplicates_and_distinct_texts(scen, parsed):
    _, contribs, _ = parsed
    truth = scen.truth["contributions"]
    assert set(truth) == set(contribs)
    order = sorted(contribs, key=lambda c: contribs[c][0])
    text = {c: contribs[c][1]["content"] for c in order}
    sh = {c: shingles(text[c]) for c in order}
    classes = [t["class"] for t in truth.values()]
    assert all(classes.count(k) >= 10 for k in ("exact_dup", "near_dup", "low_quality", "farm"))
    assert classes.count("honest") >= 250
    for n, c in enumerate(order):  # brute force: the earliest earlier contribution, Jaccard >= 0.8 or same text
        t = truth[c]
        earlier = order[:n]
        dup = next((d for d in earlier if text[d] == text[c] or jac(sh[c], sh[d]) >= 0.8), None)
        assert dup == t["duplicate_of"], c
        if t["class"] == "exact_dup":
            assert text[c] == text[t["original_of"]] and truth[t["original_of"]]["class"] == "honest"
        elif t["class"] == "near_dup":
            assert text[c] != text[t["original_of"]] and truth[t["original_of"]]["class"] == "honest"
            assert jac(sh[c], sh[t["original_of"]]) >= 0.8
        if t["original_of"]:
            assert dup == t["original_of"]
        if t["class"] in ("honest", "low_quality"):
            assert dup is None
    honest = [c for c in order if truth[c]["class"] == "honest"]
    for i, a in enumerate(honest):
        assert 60 <= len(WORD.findall(text[a])) <= 400
        for b in honest[i + 1:]:
            assert jac(sh[a], sh[b]) < 0.3, (a, b)


def test_low_quality_and_farm(scen, parsed):
    _, contribs, _ = parsed
    truth = scen.truth["contributions"]
    low = [contribs[c][1]["content"] for c, t in truth.items() if t["class"] == "low_quality"]
    assert any(re.search(r"(buy now \S+ ){3}", x) for x in low)
    assert any("Rated" in x and "users" in x for x in low)
    assert any(len(set(x.split())) > 30 and "." not in x for x in low)  # word salad
    farm = [contribs[c][1] for c, t in truth.items() if t["class"] == "farm"]
    stamps = sorted(datetime.fromisoformat(e["ts"].replace("Z", "+00:00")) for e in farm)
    assert (stamps[-1] - stamps[0]).total_seconds() <= 15
    assert len({e["contributor"] for e in farm}) >= 12
    assert all(scen.truth["accounts"][e["contributor"]] == "farm" for e in farm)


def test_validators_behave_as_labelled(scen, parsed):
    events, _, _ = parsed
    truth = scen.truth
    hits: dict[str, list[bool]] = {}
    for _, e in events:
        if e["type"] == "validation":
            good = truth["contributions"][e["contribution_id"]]["class"] == "honest"
            hits.setdefault(e["validator"], []).append((e["verdict"] == "accept") == good)
    for v, h in hits.items():
        acc, role = sum(h) / len(h), truth["accounts"][v]
        assert role.startswith("validator_")
        assert {"validator_honest": 0.85 <= acc <= 0.98, "validator_lazy": 0.3 <= acc <= 0.7,
                "validator_colluding": acc < 0.6}[role], (v, role, acc)


def test_lineage_is_acyclic_and_ordered(scen, parsed):
    _, _, models = parsed
    methods = {e["method"] for _, e in models.values()}
    assert methods == {"pretrain", "finetune", "lora", "distill", "merge"}
    state: dict[str, int] = {}

    def visit(m: str) -> None:
        assert state.get(m) != 1, f"cycle through {m}"
        if state.get(m) == 2:
            return
        state[m] = 1
        for b in models[m][1].get("base_models", []):
            assert b in models and models[b][0] < models[m][0]
            visit(b)
        state[m] = 2

    for m in models:
        visit(m)
    assert any(len(e.get("base_models", [])) >= 2 for _, e in models.values())
    assert all(scen.truth["accounts"][e["operator"]] == "operator" for _, e in models.values())
    assert all("inherit" in e for _, e in models.values() if e.get("base_models"))


def _lineage(models, m) -> set[str]:
    e = models[m][1]
    return {d["datanet"] for d in e["datanets"]}.union(*(_lineage(models, b) for b in e.get("base_models", [])))


def test_copied_spans_appear_in_named_contributions(scen, parsed):
    events, contribs, models = parsed
    usage = [e for _, e in events if e["type"] == "usage"]
    assert set(scen.truth["usage"]) == {u["request_id"] for u in usage}
    n_copied = n_plain = 0
    for u in usage:
        t = scen.truth["usage"][u["request_id"]]
        assert t["model_id"] == u["model_id"] and t["fee"] == u["fee"]
        assert t["contribution_ids"] == [c["contribution_id"] for c in t["copied"]]
        lineage = _lineage(models, u["model_id"])
        for c in t["copied"] + t["copied_out_of_lineage"]:
            content = contribs[c["contribution_id"]][1]["content"]
            span = content[c["start"]:c["end"]]
            assert 10 <= len(WORD.findall(span)) == c["words"] <= 60
            assert span in u["output"]
            assert scen.truth["contributions"][c["contribution_id"]]["class"] == "honest"
            inside = contribs[c["contribution_id"]][1]["datanet"] in lineage
            assert inside == (c in t["copied"])
        n_copied += bool(t["copied"])
        n_plain += not t["copied"] and not t["copied_out_of_lineage"]
    assert n_copied > len(usage) / 2 and n_plain > 50
    assert sum(1 for t in scen.truth["usage"].values() if t["copied_out_of_lineage"]) >= 5


def test_languages(scen, parsed):
    _, contribs, _ = parsed
    honest = [e for c, (_, e) in contribs.items() if scen.truth["contributions"][c]["class"] == "honest"]
    texts = {dn: " ".join(e["content"] for e in honest if e["datanet"] == dn) for dn in scen.truth["datanets"]}
    assert {d["language"] for d in scen.truth["datanets"].values()} >= {"en", "de", "fr"}
    assert re.search(r"[äöüß]", texts["legal-de"]) and "Verträge über Grundstücke" in texts["legal-de"]
    assert re.search(r"[éèàç]", texts["legal-fr"]) and "la responsabilité contractuelle" in texts["legal-fr"]
    assert " the " in texts["medical-en"] and " the " in texts["code-en"]
    assert not re.search(r"[äöüéèç]", texts["code-en"])


def test_write_round_trip(scen, tmp_path):
    ev, tr = write(scen, tmp_path / "out")
    lines = ev.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and lines[:-1] == [raw for _, raw in scen.records]
    assert json.loads(tr.read_text(encoding="utf-8")) == json.loads(json.dumps(scen.truth))
