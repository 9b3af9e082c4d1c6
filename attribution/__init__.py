"""Pure attribution kernels over numpy arrays (numba-compiled). No I/O here.

Modules: ``text`` (normalization, token hashes), ``shingles`` (word n-gram hashes),
``minhash`` (similarity sketches), ``lsh`` (LSH index, near-duplicate detector),
``spans`` / ``span_kernels`` / ``vocab`` (span index and span attribution), ``split`` (exact integer
splitting). ``warmup()`` compiles every kernel once at process start.
"""
from __future__ import annotations

import os
from pathlib import Path

from poa_stream.attribution.warmup import warmup

__all__ = ["warmup"]

CACHE_MARKER = "poa_stream-namespace"


def forget_caches_of_old_names(dirs: list[Path]) -> int:
    """numba keys its kernel cache by source file (path, mtime, size), not by module name: a
    cache written when these modules were the top-level package ``attribution`` (before the
    ``poa_stream`` namespace) still matches an unchanged file and then fails to import that
    name. Drop the cache files of each folder once (a marker file records it); returns how
    many went. Folders that cannot be written are left as they are."""
    n = 0
    for d in dirs:
        marker = d / CACHE_MARKER
        if not d.is_dir() or marker.exists():
            continue
        try:
            for f in d.iterdir():
                if f.suffix in (".nbi", ".nbc"):
                    f.unlink()
                    n += 1
            marker.touch()
        except OSError:
            pass
    return n


def _cache_dirs() -> list[Path]:
    from numba.core import config
    from numba.core.caching import _CacheLocator
    here = Path(__file__).resolve().parent
    dirs = [here / "__pycache__"]
    if config.CACHE_DIR:  # NUMBA_CACHE_DIR: numba's own sub-folder for this source folder
        dirs.append(Path(config.CACHE_DIR) / _CacheLocator.get_suitable_cache_subpath(os.fspath(here / "x.py")))
    return dirs


forget_caches_of_old_names(_cache_dirs())
