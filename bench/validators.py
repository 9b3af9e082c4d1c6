"""Spam and validator engine on the seeded scenario: detection quality and vote throughput.

Runs the pure modules (attribution.quality, velocity, clusters, reliability) over the
contributions and validations of ``poa.scenario.generate(seed)`` in production order, scores
them against the scenario's truth and prints one table:
- spam precision / recall; the rule: spam = exact or near duplicate (word-5-gram Jaccard >= 0.8,
  computed exactly here; the worker gets it from its MinHash index) of ANOTHER account's earlier
  contribution, or member of a farm cluster (FarmClusters rule), or >= 2 low-quality reasons;
- sybil-farm recall (accounts and contributions) and honest accounts caught in farms;
- validator ranking: mean reliability per role;
- posterior accuracy vs truth (good = class honest, P >= 0.5) of online Dawid-Skene alone, with
  spam evidence as external prior, conservative (no inverted validators), stake-amplified, and of
  crowd-kit's batch DawidSkene and MajorityVote on the same votes;
- votes/s of the online update (per call and batched) vs crowd-kit's fit time, same run.
Usage: python bench/validators.py [--seed 7] [--scale 1]. crowd-kit is a bench-only dependency.
The spam numbers here are on our own generator; the real-data evaluation is bench/quality.py.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poa_stream.attribution.clusters import FarmClusters  # noqa: E402
from poa_stream.attribution.quality import Familiarity, is_low_quality, low_quality_reasons, signals  # noqa: E402
from poa_stream.attribution.reliability import OnlineDawidSkene  # noqa: E402
from poa_stream.attribution.text import token_hashes  # noqa: E402
from poa_stream.attribution.velocity import Interner, VelocityTracker  # noqa: E402
from poa_stream.scenario import DUP_J, generate, shingles, words  # noqa: E402

SPAM_PRIOR = 0.05  # external P(good) of a contribution with spam evidence


def events(records, topic: str, typ: str):
    seen = set()
    for t, raw in records:
        if t != topic:
            continue
        try:
            o = json.loads(raw)
        except ValueError:
            continue
        if o.get("type") == typ and isinstance(o.get("ts"), str) and o.get("event_id") not in seen:
            try:
                o["ts_s"] = datetime.fromisoformat(o["ts"].replace("Z", "+00:00")).timestamp()
            except ValueError:  # a malformed record: the worker dead-letters it
                continue
            seen.add(o.get("event_id"))
            yield o


def spam_engine(sc):
    """Contributions in order -> per contribution evidence, plus the engine objects."""
    truth = sc.truth["contributions"]
    accts, cids, fam, vel, farms = Interner(), Interner(), Familiarity(), VelocityTracker(), FarmClusters()
    index: dict[tuple, list[int]] = {}
    shs, wls, owner, ev = [], [], [], {}
    for o in events(sc.records, "poa.contributions", "contribution"):
        if o.get("contribution_id") not in truth or o["contribution_id"] in cids or not isinstance(o.get("content"), str):
            continue
        c, a, t = cids(o["contribution_id"]), accts(o["contributor"]), o["ts_s"]
        toks = token_hashes(o["content"])
        reasons = low_quality_reasons(signals(toks, o["content"].encode(), fam))
        if not reasons:  # only clean texts teach the familiarity model
            fam.learn(toks)
        sh, wl = shingles(o["content"]), words(o["content"])
        hits: dict[int, int] = {}
        for g in sh:
            for j in index.setdefault(g, []):
                hits[j] = hits.get(j, 0) + 1
            index[g].append(c)
        dup = min((j for j, h in hits.items() if h / (len(sh) + len(shs[j]) - h) >= DUP_J or wls[j] == wl),
                  default=-1)
        shs.append(sh), wls.append(wl), owner.append((a, t))
        ev[c] = {"low_quality": is_low_quality(reasons), "reasons": reasons, "dup": dup,
                 "cross_dup": dup >= 0 and owner[dup][0] != a, "burst": vel.observe(a, t), "farm": False}
        ev[c]["spam"] = ev[c]["cross_dup"] or ev[c]["low_quality"]
        ev[c]["spam_ts"] = t if ev[c]["spam"] else None
        if dup >= 0 and farms.add_edge(dup, c, owner[dup][0], a, owner[dup][1], t) >= 0:
            for m in farms.farm_members(farms.cluster_of(c)):  # may mark earlier members now
                e = ev[int(m)]
                e["farm"] = e["spam"] = True
                e["spam_ts"] = t if e["spam_ts"] is None else e["spam_ts"]
    return accts, cids, ev, farms


def vote_arrays(sc, cids: Interner):
    vals, rows, pairs = Interner(), [], set()
    for o in events(sc.records, "poa.validations", "validation"):
        c, st = o.get("contribution_id"), o.get("stake", 1_000_000)
        if (not isinstance(c, str) or c not in cids or o.get("verdict") not in ("accept", "reject")
                or not isinstance(o.get("validator"), str) or type(st) is not int
                or (o["validator"], c) in pairs):
            continue
        pairs.add((o["validator"], c))
        rows.append((vals(o["validator"]), cids.get(c), o["verdict"] == "accept", st, o["ts_s"]))
    v, c, a, s, t = (np.array(x) for x in zip(*rows))
    return vals, v, c, a.astype(np.int64), s.astype(np.float64), t


def best_of(fn, n: int = 5) -> float:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    sc = generate(seed=args.seed, scale=args.scale)
    truth = sc.truth
    accts, cids, ev, farms = spam_engine(sc)
    t_spam = time.perf_counter() - t0
    n = len(cids)
    cls = np.array([truth["contributions"][cids.names[i]]["class"] for i in range(n)])
    bad = cls != "honest"
    spam = np.array([ev[i]["spam"] for i in range(n)])
    tp = int((spam & bad).sum())
    role = {a: truth["accounts"][a] for a in accts.names}
    farm_accts = {accts.names[farms.account[int(m)]] for m in range(n) if ev[m]["farm"]}
    n_farm = sum(r == "farm" for r in role.values())
    bursts = {r: [ev[i]["burst"] for i in range(n) if role[truth["contributions"][cids.names[i]]["contributor"]] == r]
              for r in ("honest", "spammer", "farm")}

    vals, v, c, a, s, vts = vote_arrays(sc, cids)
    good = ~bad
    vrole = [truth["validators"][x]["role"] for x in vals.names]
    spam_mask = spam.copy()

    def online(**kw) -> OnlineDawidSkene:
        ds = OnlineDawidSkene(**kw)
        ds.vote_many(v, c, a, s)
        return ds

    def online_with_evidence() -> OnlineDawidSkene:
        """Event-time order, as in the worker: spam evidence sets the prior when it appears
        (a farm member can turn spam after its first votes), votes in between."""
        ds = OnlineDawidSkene()
        timeline = sorted([(ev[i]["spam_ts"], 0, i) for i in range(n) if ev[i]["spam"]]
                          + [(float(t), 1, k) for k, t in enumerate(vts)])
        for _, kind, k in timeline:
            if kind == 0:
                ds.set_prior(k, SPAM_PRIOR)
            else:
                ds.vote(int(v[k]), int(c[k]), bool(a[k]), float(s[k]))
        return ds

    def acc(p) -> str:
        return f"{((np.asarray(p)[:n] >= 0.5) == good).mean():.4f}"

    ds, dse = online(), online_with_evidence()
    from crowdkit.aggregation import DawidSkene, MajorityVote
    import pandas as pd
    df = pd.DataFrame({"task": c, "worker": v, "label": a})
    ck = {}
    t_ck = best_of(lambda: ck.__setitem__("ds", DawidSkene(n_iter=100).fit_predict(df)), 3)
    ck_lab = ck["ds"].sort_index().reindex(range(n)).to_numpy()
    mv_lab = MajorityVote().fit_predict(df).sort_index().reindex(range(n)).to_numpy()
    t_batch = best_of(lambda: online())

    def per_call() -> None:
        d = OnlineDawidSkene()
        for x, y, z, w in zip(v.tolist(), c.tolist(), a.tolist(), s.tolist()):
            d.vote(x, y, bool(z), w)
    t_call = best_of(per_call, 3)

    tab = Table(title=f"spam and validator engine, scenario seed={args.seed} scale={args.scale}: "
                      f"{n} contributions ({int(bad.sum())} spam), {len(v)} votes, {len(vals)} validators")
    for col in ("metric", "value", "note"):
        tab.add_column(col)
    row = tab.add_row
    row("spam precision", f"{tp / max(1, spam.sum()):.4f}", f"{tp} of {int(spam.sum())} flagged are spam")
    row("spam recall", f"{tp / max(1, bad.sum()):.4f}",
        " ".join(f"{k}={int((spam & (cls == k)).sum())}/{int((cls == k).sum())}"
                 for k in ("exact_dup", "near_dup", "low_quality", "farm")))
    row("honest flagged low-quality", f"{int(sum(ev[i]['low_quality'] for i in range(n) if good[i]))}",
        f"of {int(good.sum())} honest (>= 2 reasons)")
    row("sybil-farm recall (accounts)", f"{sum(role[x] == 'farm' for x in farm_accts) / max(1, n_farm):.4f}",
        f"non-farm accounts in farms: {sum(role[x] != 'farm' for x in farm_accts)}")
    row("sybil-farm recall (contributions)",
        f"{sum(ev[i]['farm'] for i in range(n) if cls[i] == 'farm') / max(1, (cls == 'farm').sum()):.4f}",
        f"{farms.edges} cross-account duplicate edges")
    row("burst score max (honest/spammer/farm)", " / ".join(f"{max(bursts[k], default=0):.2f}" for k in bursts),
        "velocity: decayed uploads per 10 min vs usual pace")
    for r in ("validator_honest", "validator_lazy", "validator_colluding"):
        idx = [i for i, x in enumerate(vrole) if x == r]
        row(f"reliability {r[10:]}", f"{np.mean([ds.reliability(i) for i in idx]):.3f}",
            f"with evidence priors {np.mean([dse.reliability(i) for i in idx]):.3f}; "
            f"fee weight {np.mean([dse.fee_weight(i) for i in idx]):.3f}")
    sus = dse.suspects(spam_mask)
    row("suspects (accepts_spam)", ", ".join(sorted({vrole[x][10:] for x, r, _ in sus if r == "accepts_spam"})) or "-",
        f"{sum(r == 'accepts_spam' for _, r, _ in sus)} validators")
    row("posterior acc: online DS", acc(ds.post), "votes only, stake-tempered")
    row("posterior acc: online DS + sweep", acc((lambda d: (d.sweep(20), d.post)[1])(online())), "20 EM passes")
    row("posterior acc: online DS + evidence", acc(dse.post),
        f"spam evidence -> prior {SPAM_PRIOR}, event-time order")
    st_count = {k: [dse.status(i) == k for i in range(n)] for k in ("accepted", "rejected", "pending")}
    row("status with evidence (accepted/rejected/pending)", " / ".join(str(sum(x)) for x in st_count.values()),
        f"wrong: {sum(good[i] != x for i, x in enumerate(st_count['accepted']) if x or st_count['rejected'][i])} "
        "decided; accept_at 0.8, reject_at 0.2")
    row("posterior acc: online DS, no inversion", acc(online(allow_inverted=False).post), "allow_inverted=False")
    row("posterior acc: online DS, stake-amplified", acc(online(stake_ref=100e6, w_max=2.0).post),
        "w up to 2 from 100 tokens")
    row("posterior acc: crowd-kit DawidSkene", acc(ck_lab == 1), "batch EM, 100 iterations")
    row("posterior acc: majority vote", acc(mv_lab == 1), "crowd-kit MajorityVote")
    row("online DS votes/s (vote_many)", f"{len(v) / t_batch:,.0f}", f"{t_batch * 1e3:.2f} ms for all votes")
    row("online DS votes/s (vote per call)", f"{len(v) / t_call:,.0f}", f"{t_call * 1e6 / len(v):.1f} us per vote")
    row("crowd-kit DawidSkene fit", f"{t_ck * 1e3:.0f} ms",
        f"x{t_ck / t_batch:,.0f} the batched online pass, x{t_ck / t_call:,.1f} per-call")
    row("spam engine pass", f"{t_spam:.2f} s", "scenario generation + signals + exact Jaccard + clusters")
    Console(width=160).print(tab)


if __name__ == "__main__":
    main()
