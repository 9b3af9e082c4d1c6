"""Compile (or load from numba's cache) every attribution kernel on tiny inputs.

``warmup() -> seconds spent``. The worker calls it once at start so that no event pays
for compilation. The first run in a fresh checkout compiles everything (tens of seconds
on 2 cores) and writes numba's cache next to the modules; later processes load it (about
a second). Inputs use the exact dtypes of the production calls, so no kernel is
compiled a second time for another signature.
"""
from __future__ import annotations

import time

import numpy as np


def warmup() -> float:
    t0 = time.perf_counter()
    from poa_stream.attribution.lsh import NearDupIndex
    from poa_stream.attribution.minhash import MinHasher, sketch_batch
    from poa_stream.attribution.shingles import ngram_hashes, shingles, shingles_batch
    from poa_stream.attribution.spans import NgramIndex, SpanIndex, allowed_mask_from
    from poa_stream.attribution.split import split_amount
    from poa_stream.attribution.text import content_hash, hash_words, token_hashes, token_hashes_batch

    toks = token_hashes("Warm-up: der schnelle braune Fuchs springt über l'homme, "
                        "the quick brown fox jumps over the lazy dog " * 3)
    token_hashes("plain ascii text")
    content_hash("Größe")
    flat, offs = token_hashes_batch(["eins zwei drei vier fünf sechs", "one two"])
    hash_words(np.frombuffer(b"a b", dtype=np.uint8))
    ngram_hashes(flat, 2)
    sh, so = shingles_batch(flat, offs, 5)
    many = np.arange(600, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # grows tables
    for scheme in ("fss", "classic"):
        h = MinHasher(scheme=scheme)
        h.signature(toks)
        h.batch_tokens(flat, offs)
        sketch_batch(sh, so, h.perm, h.rounds, scheme == "fss")
    nd = NearDupIndex()
    for i in range(5):  # the fifth insert rehashes the band table
        nd.check_and_add(i, shingles(many[i * 100:i * 100 + 100]))
    nd.check_and_add(5, shingles(toks))
    nd.check_and_add(6, shingles(toks[1:]))
    for cls in (SpanIndex, NgramIndex):
        idx = cls(4, mem_min=8)
        idx.add(0, toks)
        idx.add(1, toks[5:])  # forces a memtable merge (mem_min=8)
        idx.add(2, toks[:3])
        idx.add(3, many)  # rehashes the vocabulary
    idx = SpanIndex(4, mem_min=8)
    idx.add(0, toks)
    idx.attribute(toks[2:], allowed_mask_from([0], 2))
    NgramIndex(4).attribute(toks, {0})
    split_amount(1000, [1, 2, 3])
    split_amount(1000, np.array([0.5, 0.25]))
    _warm_spam(toks)
    return time.perf_counter() - t0


def _warm_spam(toks: np.ndarray) -> None:
    from poa_stream.attribution.clusters import FarmClusters
    from poa_stream.attribution.quality import Familiarity, signals
    from poa_stream.attribution.reliability import OnlineDawidSkene
    from poa_stream.attribution.velocity import VelocityTracker

    fam = Familiarity()
    fam.learn(toks)
    signals(toks, b"x. y", fam)
    VelocityTracker().observe(0, 1.0)
    farms = FarmClusters()
    farms.add_edge(0, 1, 0, 1, 0.0, 1.0)
    farms.is_farm(0)
    farms.farm_members(0)
    ds = OnlineDawidSkene()
    ds.vote(0, 0, True, 1e6)
    ds.set_prior(1, 0.05)
    ds.vote(1, 1, False, 1e6)
    ds.suspects(np.zeros(2, dtype=bool))
    ds.sweep()
