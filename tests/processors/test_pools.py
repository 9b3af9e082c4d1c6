"""Top-K evidence and datanet pools: bounded rows per usage, exact settlement, no split gain."""
from __future__ import annotations

import math

import numpy as np
import pytest
from support.events_factory import LEGAL_DE, LEGAL_FR, MEDICAL, contribution, model, usage, validation

from poa_stream.attribution.span_kernels import attribute_matches
from poa_stream.attribution.spans import SpanIndex, allowed_mask_from
from poa_stream.attribution.text import token_hashes
from poa_stream.scenario import generate
from poa_stream.processors.corpus import pool_weight
from poa_stream.processors.merkle import epoch_leaves, root
from poa_stream.processors.replay import process_all

C, V, M, U = "poa.contributions", "poa.validations", "poa.models", "poa.usage"
DAY2 = "2026-01-02T00:00:00Z"  # an event of the next epoch closes the first one

# real prose, not from our generator (the US Declaration of Independence, 1776)
PROSE = (
    "When in the Course of human events it becomes necessary for one people to dissolve the "
    "political bands which have connected them with another and to assume among the powers of "
    "the earth the separate and equal station to which the Laws of Nature and of Nature's God "
    "entitle them a decent respect to the opinions of mankind requires that they should declare "
    "the causes which impel them to the separation. We hold these truths to be self-evident that "
    "all men are created equal that they are endowed by their Creator with certain unalienable "
    "Rights that among these are Life Liberty and the pursuit of Happiness. That to secure these "
    "rights Governments are instituted among Men deriving their just powers from the consent of "
    "the governed That whenever any Form of Government becomes destructive of these ends it is "
    "the Right of the People to alter or to abolish it and to institute new Government laying its "
    "foundation on such principles and organizing its powers in such form as to them shall seem "
    "most likely to effect their Safety and Happiness. Prudence indeed will dictate that "
    "Governments long established should not be changed for light and transient causes and "
    "accordingly all experience hath shewn that mankind are more disposed to suffer while evils "
    "are sufferable than to right themselves by abolishing the forms to which they are accustomed.")


def _close(rows):
    """(topic, raw) of an event in the next epoch (closes the first one)."""
    return rows + [(M, model("close", "Z", "op-z", ["other"], ts=DAY2))]


def _settled(out, account):
    return sum(r["amount"] for r in out.rows.get("reward_ledger", [])
               if r["account"] == account and r["source"] == "pool")


def test_no_evidence_goes_to_one_pool_entry_settled_exactly(settings):
    core, out = process_all(settings, _close([
        (C, contribution("e1", "a", "alice", "d", LEGAL_DE, 0)),
        (C, contribution("e2", "b", "bob", "d", MEDICAL, 1)),
        (V, validation("e3", "val1", "a", minute=2)),
        (V, validation("e3b", "val1", "b", minute=2)),
        (C, contribution("e3c", "c", "carol", "d", LEGAL_FR, 2)),  # never voted on: not paid
        (M, model("e4", "M", "op", ["d"], minute=3)),
        (U, usage("e5", "r1", "M", 1_000_001, "nothing here matches any contribution at all today", 4)),
        (U, usage("e6", "r2", "M", 999_999, "another unrelated answer with no shared span at all", 5)),
    ]))
    ledger = out.rows["reward_ledger"]
    for eid, fee in (("e5", 1_000_001), ("e6", 999_999)):
        mine = [r for r in ledger if r["ref_event_id"] == eid]
        assert sum(r["amount"] for r in mine) == fee
        pools = [r for r in mine if r["role"] == "pool"]
        assert [r["account"] for r in pools] == ["pool:d"]  # one entry per usage per datanet
        assert not [r for r in mine if r["role"] == "contributor"]
    attr = [a for a in out.rows["attributions"] if a["request_id"] == "r1"]
    assert [(a["contributor"], a["evidence"], a["weight"]) for a in attr] == [("pool:d", "pool", 1.0)]
    pooled = sum(r["amount"] for r in ledger if r["account"] == "pool:d" and r["source"] == "fee")
    settle = [r for r in ledger if r["source"] == "pool"]
    debit = [r for r in settle if r["role"] == "pool"]
    assert [r["amount"] for r in debit] == [-pooled]  # the pool nets to zero in its epoch
    assert sum(r["amount"] for r in settle if r["role"] != "pool") == pooled
    assert sum(r["amount"] for r in ledger if r["account"] == "pool:d") == 0
    paid = {(r["role"], r["account"]): r["amount"] for r in settle if r["role"] != "pool"}
    # accepted contributions only (carol's is pending: a pool pays validated supply)
    assert core.contribs["c"].status == "pending"
    assert set(paid) == {("contributor", "alice"), ("contributor", "bob"), ("validator", "val1")}
    # contributors by distinct token windows: the split follows the texts' weights exactly
    wa, wb = (pool_weight(token_hashes(t), settings.span_min_tokens) for t in (LEGAL_DE, MEDICAL))
    c_total = paid[("contributor", "alice")] + paid[("contributor", "bob")]
    assert abs(paid[("contributor", "alice")] - c_total * wa / (wa + wb)) <= 1
    epochs = out.rows["epochs"]
    assert epochs[0]["pool_settled"] == pooled and epochs[0]["pool_carried"] == 0
    # the settlement is part of the epoch's entries and Merkle root
    e0 = [r for r in ledger if r["epoch"] == epochs[0]["epoch"]]
    assert epochs[0]["entries"] == len(e0)
    assert root(epoch_leaves(e0)[1]).hex() == epochs[0]["merkle_root"]


def test_seeded_scenario_pools_settle_to_the_last_micro_unit(settings):
    scen = generate(seed=11, scale=0.5)
    core, out = process_all(settings, [(t, line.encode()) for t, line in scen.records])
    ledger = out.rows["reward_ledger"]
    by_ref: dict[str, int] = {}
    for r in ledger:
        by_ref[r["ref_event_id"]] = by_ref.get(r["ref_event_id"], 0) + r["amount"]
    for u in out.rows["usage"]:
        assert by_ref.get(u["event_id"], 0) == u["fee"]
    refs = {r["ref_event_id"] for r in ledger if r["source"] == "pool"}
    assert refs and all(by_ref[ref] == 0 for ref in refs)  # credits == debit, per settlement
    carried = sum(core.pools.balance.values())
    assert sum(r["amount"] for r in ledger if r["role"] == "pool") == carried
    for e in out.rows["epochs"]:
        rows = [r for r in ledger if r["epoch"] == e["epoch"]]
        assert root(epoch_leaves(rows)[1]).hex() == e["merkle_root"]
        assert e["entries"] == len(rows)
    # bounded: evidence rows per usage <= K per lineage model, pool rows <= datanets x models
    per_usage: dict[str, int] = {}
    for a in out.rows["attributions"]:
        if a["evidence"] != "pool":
            per_usage[a["request_id"]] = per_usage.get(a["request_id"], 0) + 1
    assert max(per_usage.values()) <= core.P.attribution_top_k * 3


def _matching_corpus(n):
    """n contributions that each share a distinct 10-word span with one output."""
    words = [f"w{i}" for i in range(12 * n)]
    docs = [" ".join(words[12 * i:12 * i + 10] + ["filler", "text", f"tail{i}"]) for i in range(n)]
    output = " ".join(" ".join(words[12 * i:12 * i + 10 + (i % 3)]) for i in range(n))
    return docs, output


@pytest.mark.parametrize("k", [1, 3, 5, 32])
def test_top_k_keeps_the_strongest_evidence_and_stays_in_lineage(settings, k):
    s = settings.model_copy(update={"attribution_top_k": k})
    docs, output = _matching_corpus(12)
    recs = [(C, contribution(f"e{i}", f"c{i}", f"acct{i}", "d" if i % 4 else "other", d, i))
            for i, d in enumerate(docs)]
    recs += [(M, model("m", "M", "op", ["d"], minute=30)),
             (U, usage("u", "r", "M", 10_000_000, output, 31))]
    core, out = process_all(s, recs)
    attr = out.rows["attributions"]
    ev = [a for a in attr if a["evidence"] == "span"]
    assert 0 < len(ev) <= k and all(a["datanet"] == "d" for a in attr)
    # brute force: the lineage's eligible matches, the best ceil(5% x output) distinct spans
    # (length x ln(1 + N / occurrences)), their credits, the strongest k contributions
    idx = SpanIndex(s.span_min_tokens)
    for c in core.by_idx:
        idx.add(c.idx, token_hashes(docs[c.idx]))
    allowed = [c.idx for c in core.by_idx if c.datanet == "d"]
    out_toks = token_hashes(output)
    ss, LL, dd = idx.find_spans(out_toks, allowed_mask_from(allowed, len(docs)))
    occ: dict[tuple[int, int], int] = {}
    for a, b in zip(ss.tolist(), LL.tolist()):
        occ[(a, b)] = occ.get((a, b), 0) + 1
    n_keep = math.ceil(0.05 * len(out_toks))
    kept = sorted(occ, key=lambda sp: (-sp[1] * math.log1p(len(docs) / occ[sp]), sp))[:n_keep]
    sel = np.asarray([(a, b) in kept for a, b in zip(ss.tolist(), LL.tolist())])
    ids, w, _ = attribute_matches(len(out_toks), ss[sel], LL[sel], dd[sel], float(len(docs)))
    best = sorted(zip(ids.tolist(), w.tolist()), key=lambda x: (-x[1], x[0]))[:k]
    assert sorted(a["contribution_id"] for a in ev) == sorted(f"c{i}" for i, _ in best)
    ledger = out.rows["reward_ledger"]
    assert sum(r["amount"] for r in ledger if r["ref_event_id"] == "u") == 10_000_000
    credited = {r["account"] for r in ledger if r["role"] == "contributor"}
    assert credited <= {a["contributor"] for a in ev}
    # what the top k leaves goes to the lineage's pool, not to anyone outside it
    assert {r["account"] for r in ledger if r["role"] == "pool"} <= {"pool:d"}


def test_splitting_a_text_into_ten_uploads_does_not_raise_its_pool_share(settings):
    def accepted(cid, minute):  # a pool pays accepted contributions
        return (V, validation(f"v-{cid}", "val1", cid, minute=minute))
    other = [(C, contribution("o1", "x1", "bob", "d", MEDICAL, 0)),
             (C, contribution("o2", "x2", "carol", "d", LEGAL_DE, 1)), accepted("x1", 30), accepted("x2", 30)]
    tail = [(M, model("m", "M", "op", ["d"], minute=50)),
            (U, usage("u", "r", "M", 50_000_000, "an answer that quotes none of the uploads", 51))]
    words = PROSE.split()
    parts = [" ".join(words[j * len(words) // 10:(j + 1) * len(words) // 10]) for j in range(10)]
    whole = [(C, contribution("a0", "t0", "alice", "d", PROSE, 2)), accepted("t0", 31)]
    split = ([(C, contribution(f"a{j}", f"t{j}", "alice", "d", p, 2 + j)) for j, p in enumerate(parts)]
             + [accepted(f"t{j}", 31 + j) for j in range(10)])
    core1, out1 = process_all(settings, _close(other + whole + tail))
    core2, out2 = process_all(settings, _close(other + split + tail))
    assert all(core2.contribs[f"t{j}"].status == "accepted" for j in range(10))
    one, ten = _settled(out1, "alice"), _settled(out2, "alice")
    assert one > 0 and ten <= one
    assert _settled(out2, "bob") >= _settled(out1, "bob")  # the others lose nothing to the split
    w = settings.span_min_tokens
    assert sum(pool_weight(token_hashes(p), w) for p in parts) < pool_weight(token_hashes(PROSE), w)


def test_a_pool_with_no_eligible_contribution_is_carried(settings):
    core, out = process_all(settings, [
        (C, contribution("e1", "a", "alice", "d", LEGAL_DE, 0)),
        (M, model("e2", "M", "op", ["d"], minute=1)),
        (U, usage("e3", "r1", "M", 1_000_000, "no span in common with the upload", 2)),
        (V, validation("e4", "v1", "a", "reject", minute=3, stake=5_000_000)),
        (V, validation("e5", "v2", "a", "reject", minute=4, stake=5_000_000)),
        (V, validation("e6", "v3", "a", "reject", minute=5, stake=5_000_000)),
        (M, model("close", "Z", "op-z", ["other"], ts=DAY2)),
    ])
    assert core.contribs["a"].status == "rejected"
    ledger = out.rows["reward_ledger"]
    pooled = sum(r["amount"] for r in ledger if r["account"] == "pool:d")
    assert pooled > 0 and not [r for r in ledger if r["source"] == "pool"]
    assert core.pools.balance == {"d": pooled}
    assert out.rows["epochs"][0]["pool_carried"] == pooled


def test_pool_weight_counts_distinct_windows():
    w = 8
    toks = token_hashes(PROSE)
    assert pool_weight(toks, w) == len({tuple(toks[i:i + w]) for i in range(len(toks) - w + 1)})
    assert pool_weight(np.concatenate([toks, toks]), w) < 2 * pool_weight(toks, w)  # repeats add ~nothing
    assert pool_weight(toks[:3], w) == 1 and pool_weight(toks[:0], w) == 0


def test_settled_credits_have_inclusion_proofs(settings, sink):
    """`poa proof` covers pool settlements: write the rows to a real store, prove alice's
    settlement credit against the stored root, and check the proof."""
    from poa_stream.processors.audit import build_proof, verify_proof
    core, out = process_all(settings, _close([
        (C, contribution("e1", "a", "alice", "d", LEGAL_DE, 0)),
        (V, validation("e1v", "val1", "a", minute=1)),
        (M, model("e2", "M", "op", ["d"], minute=1)),
        (U, usage("e3", "r1", "M", 3_000_000, "no span in common with any upload", 2)),
    ]))
    sink.write(out.rows)
    epoch = out.rows["epochs"][0]["epoch"]
    doc = build_proof(sink, "alice", epoch)
    assert "pool" in {p["entry"]["source"] for p in doc["proofs"]}
    assert verify_proof(doc) == []
    settled = next(p for p in doc["proofs"] if p["entry"]["source"] == "pool")
    settled["entry"]["amount"] += 1  # a forged amount does not verify
    assert verify_proof(doc) != []


def test_a_shared_span_credits_its_earliest_source_only(settings):
    """A later upload that repeats a passage of an earlier one (not a near duplicate as a
    whole) earns nothing through that passage: the first source gets the span's credit."""
    words = PROSE.split()
    original = " ".join(words[:60])
    copy = " ".join(words[:14] + MEDICAL.split())  # 14 shared words, then other text
    core, out = process_all(settings, [
        (C, contribution("e1", "orig", "alice", "d", original, 0)),
        (C, contribution("e2", "copy", "mallory", "d", copy, 1)),
        (M, model("e3", "M", "op", ["d"], minute=2)),
        (U, usage("e4", "r", "M", 1_000_000, "As quoted: " + " ".join(words[:14]), 3)),
    ])
    assert core.contribs["copy"].status == "pending"  # eligible: the rule, not a flag, decides
    attr = [(a["contribution_id"], a["evidence"]) for a in out.rows["attributions"]]
    assert attr == [("orig", "span")]
    paid = {r["account"] for r in out.rows["reward_ledger"] if r["role"] in ("contributor", "escrow")}
    assert paid == {"escrow:orig"}  # alice's, held until validators accept "orig"
    off = settings.model_copy(update={"policy_file": None})
    from poa_stream.streams.policy import PolicySchedule
    from poa_stream.processors.core import Core
    from poa_stream.processors.replay import step
    both = Core(off, PolicySchedule.single(off.policy().model_copy(update={"span_first_source": False})))
    for t, raw in [(C, contribution("e1", "orig", "alice", "d", original, 0)),
                   (C, contribution("e2", "copy", "mallory", "d", copy, 1)),
                   (M, model("e3", "M", "op", ["d"], minute=2)),
                   (U, usage("e4", "r", "M", 1_000_000, "As quoted: " + " ".join(words[:14]), 3))]:
        step(both, t, raw)
    res = both.release(None)
    assert {a["contribution_id"] for a in res.rows["attributions"]} == {"orig", "copy"}  # without the rule


def test_a_later_upload_adds_only_its_new_windows_to_supply(settings):
    """Supply weight (pool settlements, emissions) counts the windows a contribution added:
    a later upload that repeats half of an earlier text weighs about its other half, the
    first source keeps its whole weight, and an annotation agreeing with another keeps its
    own (agreeing annotators each did the work)."""
    words = PROSE.split()
    first_half, second_half = " ".join(words[:80]), " ".join(words[80:160])
    core, _ = process_all(settings, [
        (C, contribution("e1", "orig", "alice", "d", first_half, 0)),
        (C, contribution("e2", "later", "mallory", "d", first_half[:400] + " " + MEDICAL, 1)),
        (C, contribution("e3", "fresh", "bob", "d", second_half, 2)),
        (C, contribution("e4", "lab1", "ann1", "d", "image 001: label=tabby cat indoors in daylight near a window", 3,
                         kind="annotation")),
        (C, contribution("e5", "lab2", "ann2", "d", "image 001: label=tabby cat indoors in daylight near a window", 4,
                         kind="annotation")),
    ])
    w = settings.span_min_tokens
    weight = {cid: int(core.corpus.weight[core.contribs[cid].idx]) for cid in ("orig", "later", "fresh", "lab1", "lab2")}
    assert core.contribs["later"].status == "pending"  # not a copy as a whole
    assert weight["orig"] == pool_weight(token_hashes(first_half), w)
    assert weight["fresh"] == pool_weight(token_hashes(second_half), w)
    assert weight["later"] <= pool_weight(token_hashes(MEDICAL), w) + w  # its own text (and the seam)
    assert weight["later"] < pool_weight(token_hashes(first_half[:400] + " " + MEDICAL), w) // 2
    assert weight["lab1"] == weight["lab2"] > 0
