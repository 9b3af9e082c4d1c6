"""attribution.forget_caches_of_old_names: numba caches written under the old top-level
module names are dropped once per folder; later caches stay."""
from poa_stream.attribution import CACHE_MARKER, forget_caches_of_old_names


def test_stale_caches_dropped_once(tmp_path):
    d = tmp_path / "__pycache__"
    d.mkdir()
    for name in ("text.tokenize-10.py311.nbi", "text.tokenize-10.py311.1.nbc", "text.cpython-311.pyc"):
        (d / name).write_bytes(b"x")
    assert forget_caches_of_old_names([d, tmp_path / "absent"]) == 2
    assert sorted(p.name for p in d.iterdir()) == sorted([CACHE_MARKER, "text.cpython-311.pyc"])
    (d / "text.tokenize-10.py311.nbi").write_bytes(b"new")  # written under the new names
    assert forget_caches_of_old_names([d]) == 0 and (d / "text.tokenize-10.py311.nbi").exists()
