"""Pure attribution kernels over numpy arrays (numba-compiled). No I/O here.

Modules: ``text`` (normalization, token hashes), ``shingles`` (word n-gram hashes),
``minhash`` (similarity sketches), ``lsh`` (LSH index, near-duplicate detector),
``spans`` / ``span_kernels`` / ``vocab`` (span index and span attribution), ``split`` (exact integer
splitting). ``warmup()`` compiles every kernel once at process start.
"""
from poa_stream.attribution.warmup import warmup

__all__ = ["warmup"]
