"""Spam detection on real data: false positives per kind and language, recall per spam kind.

Real corpora from this machine (poa/realdata.py: Debian and AppStream descriptions and
translated man pages in ~60 languages, Python/C/shell source, CSV/TSV tables, debtags
annotation labels, licenses and copyright files), split by a hash of each item's id into a
calibration half and a held-out half. ``--calibrate`` prints, for the calibration half
only, the honest items' quality signals per text form (attribution.quality.text_form) and
the thresholds that keep each reason under 0.5% of honest prose (what streams/policy.py's
defaults were set from); the evaluation runs the production core (poa/quality_eval.py:
processors.replay.process_all over the event log) on the held-out half (or ``--split
calibration``) and prints the markdown tables. Usage:
python bench/quality.py [--per-group 120] [--seed 1] [--spam 100] [--split held-out|calibration] [--calibrate]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def calibrate(items) -> None:
    from poa_stream.attribution.quality import Commonness, Familiarity, OrderModel, Reference, signals, text_form
    from poa_stream.attribution.text import token_hashes
    from poa_stream.quality_eval import make_spam
    fam, common, dom, order = Familiarity(), Commonness(), {}, OrderModel(Reference.load())
    vals: dict[str, list] = defaultdict(list)
    spam = make_spam(items, 1, 100)
    for role, group in (("honest", [(None, it) for it in items]), ("spam", spam)):
        for kind, it in group:
            form = text_form(it.text)
            toks = token_hashes(it.text)
            if toks.shape[0] < 16:
                continue
            d = dom.setdefault(f"{it.kind}-{it.lang}", len(dom))
            sig = signals(toks, it.text.encode(), fam if form == "prose" else None, d,
                          common if form == "prose" else None, order if form == "prose" else None)
            if role == "honest" and form == "prose":
                fam.learn(toks, d)
                common.learn(toks, d)
                order.learn(toks)
            vals[f"{role}:{form}" if role == "honest" else f"spam:{kind}"].append(sig)
    fields = ("compression", "repetition", "entropy_norm", "words_per_sentence", "familiarity", "common_share", "ordered")
    print("| group | n | " + " | ".join(f"{f} p0.5 / p50 / p99.5" for f in fields) + " |")
    print("|---|---|" + "---|" * len(fields))
    for g, sigs in sorted(vals.items()):
        cells = []
        for f in fields:
            a = np.array([getattr(s, f) for s in sigs], dtype=float)
            a = a[np.isfinite(a)]
            cells.append(" / ".join(f"{np.percentile(a, p):.3f}" for p in (0.5, 50, 99.5)) if a.size else "n/a")
        print(f"| {g} | {len(sigs)} | " + " | ".join(cells) + " |")


def reference_items(per_group: int = 1000):
    """(reference items, threshold items): the reference model is built from the real
    corpora's calibration part except the items of the calibration sample that thresholds
    are set on (a second hash halves them); the held-out part is never touched."""
    import hashlib
    from poa_stream.realdata import corpus, split
    cal_big, _ = split(corpus(per_group=per_group))
    cal, _ = split(corpus(per_group=120))
    sample = {it.id for it in cal}

    def tune(it) -> bool:
        return it.id in sample and hashlib.blake2b(it.id.encode(), digest_size=4).digest()[0] >= 128
    return [it for it in cal_big if not tune(it)], [it for it in cal if tune(it)]


def build_reference() -> None:
    from poa_stream.attribution.quality import REFERENCE_PATH, Reference, text_form
    from poa_stream.attribution.text import token_hashes
    ref_items, _ = reference_items()
    words, pairs = [], []
    for it in ref_items:
        if it.kind in ("prose", "legal") and text_form(it.text) == "prose":
            w, p = Reference.keys_of(token_hashes(it.text))
            words.append(w)
            pairs.append(p)
    ref = Reference(np.concatenate(words), np.concatenate(pairs))
    ref.save(REFERENCE_PATH)
    print(f"{len(ref_items)} reference items: {ref.words.shape[0]} words, {ref.pairs.shape[0]} pairs "
          f"-> {REFERENCE_PATH} ({REFERENCE_PATH.stat().st_size / 1e6:.1f} MB, fingerprint {ref.fingerprint})")


def main() -> None:
    from poa_stream.quality_eval import evaluate, table
    from poa_stream.realdata import corpus, split
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-group", type=int, default=120)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--spam", type=int, default=100)
    ap.add_argument("--split", choices=("held-out", "calibration"), default="held-out")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--build-reference", action="store_true")
    a = ap.parse_args()
    if a.build_reference:
        build_reference()
        return
    t0 = time.perf_counter()
    cal, held = split(corpus(per_group=a.per_group))
    print(f"corpus: {len(cal)} calibration and {len(held)} held-out items ({time.perf_counter() - t0:.0f} s)\n")
    if a.calibrate:  # the calibration items the reference model was not built from
        calibrate(reference_items()[1])
        return
    score = evaluate(held if a.split == "held-out" else cal, seed=a.seed, spam_per_kind=a.spam)
    print(f"split: {a.split}\n")
    print(table(score))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
