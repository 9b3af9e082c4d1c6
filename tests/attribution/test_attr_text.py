"""attribution.text: normalization, token hashes (kernel vs py_func vs reference)."""
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from poa_stream.attribution import text as T

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def ref_tokens(s: str) -> np.ndarray:
    """The contract: FNV-1a 64 of each word of normalize(s)."""
    return T.hash_words(np.frombuffer(T.normalize(s).encode("utf-8"), dtype=np.uint8))


def fnv(word: str) -> int:
    h = 0xCBF29CE484222325
    for b in word.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def test_normalize_european_languages():
    assert T.normalize("Die Verträge, STRASSE!") == "die verträge  strasse "
    assert T.normalize("l'homme — naïve café") .split() == ["l", "homme", "naïve", "café"]
    assert T.normalize("Don't stop") .split() == ["don", "t", "stop"]
    assert T.normalize("ﬁnal Ｆｕｌｌ") .split() == ["final", "full"]  # NFKC


def test_token_hashes_are_fnv_of_words():
    got = T.token_hashes("Größe, l'Été: x2!")
    assert got.tolist() == [fnv(w) for w in ["grösse", "l", "été", "x2"]]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_token_hashes_match_reference(s):
    assert np.array_equal(T.token_hashes(s), ref_tokens(s))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=30), max_size=6))
def test_batch_equals_single(texts):
    flat, offs = T.token_hashes_batch(texts)
    assert offs.shape[0] == len(texts) + 1 and offs[0] == 0
    for i, s in enumerate(texts):
        assert np.array_equal(flat[offs[i]:offs[i + 1]], T.token_hashes(s))


def test_odd_input_surrogates_nul_astral():
    for s in ["a\ud800b", "x\0y", "😀 emoji𝔘𝔫𝔦", "\U000e0041tag", "a\U0010fffdb", "",
              "STRAẞE İstanbul ΣΊΣΥΦΟΣ ﬃ Ǆ 𐐀𐐨", "ŉ ǰ ΐ ﬓ"]:  # multi-char case foldings
        assert np.array_equal(T.token_hashes(s), ref_tokens(s))


def test_kernel_matches_py_func():
    buf = np.frombuffer("GRÜSSE aus KÖLN\0two ẞ\0".encode(), dtype=np.uint8)
    T._tokenize("ü")  # builds plane 0
    args = (buf, T._CLASS, T._FOLD_CP, T._FOLD_OFF, T._FOLD_POOL)
    a, b = T.tokenize_utf8(*args), T.tokenize_utf8.py_func(*args)
    assert all(np.array_equal(x, y) for x, y in zip(a[:2], b[:2])) and a[2] == b[2] == -1
    assert a[1].tolist() == [0, 3, 5, 5]


def test_class_table_is_lazy_and_first_call_is_fast():
    code = ("import time, attribution.text as T; t = time.perf_counter(); "
            "T.normalize('Grüße'); dt = time.perf_counter() - t; "
            "T.token_hashes('Grüße, l\\'été'); print(int(T._PLANE_DONE.sum()), dt)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == "1"  # only the Basic Multilingual Plane was classified
    assert float(out[1]) < 0.5  # no walk over all of Unicode (was seconds)


def test_content_hash_pinned_and_case_insensitive():
    assert T.content_hash("Hello,   WORLD") == T.content_hash("hello world")
    assert T.content_hash("hello world") != T.content_hash("world hello")
    assert T.content_hash("hello world") == f"{int(T.sequence_hash(T.token_hashes('hello world'))):016x}"
