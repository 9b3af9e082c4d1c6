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
    from attribution.lsh import NearDupIndex
    from attribution.minhash import MinHasher
    from attribution.shingles import shingles, shingles_batch
    from attribution.spans import NgramIndex, SpanIndex, allowed_mask_from
    from attribution.split import split_amount
    from attribution.text import content_hash, token_hashes, token_hashes_batch

    toks = token_hashes("Warm-up: der schnelle braune Fuchs springt über l'homme, "
                        "the quick brown fox jumps over the lazy dog " * 3)
    token_hashes("plain ascii text")
    content_hash("Größe")
    flat, offs = token_hashes_batch(["eins zwei drei vier fünf sechs", "one two"])
    shingles_batch(flat, offs, 5)
    for scheme in ("fss", "classic"):
        h = MinHasher(scheme=scheme)
        h.signature(toks)
        h.batch_tokens(flat, offs)
    nd = NearDupIndex()
    nd.check_and_add(0, shingles(toks))
    nd.check_and_add(1, shingles(toks[1:]))
    for cls in (SpanIndex, NgramIndex):
        idx = cls(4, mem_min=8)
        idx.add(0, toks)
        idx.add(1, toks[5:])  # forces a memtable merge (mem_min=8)
        idx.add(2, toks[:3])
    idx = SpanIndex(4, mem_min=8)
    idx.add(0, toks)
    idx.attribute(toks[2:], allowed_mask_from([0], 2))
    NgramIndex(4).attribute(toks, {0})
    split_amount(1000, [1, 2, 3])
    split_amount(1000, np.array([0.5, 0.25]))
    return time.perf_counter() - t0
