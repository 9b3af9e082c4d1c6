"""attribution.split: exact largest-remainder splitting (property tests)."""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from poa_stream.attribution.split import split_amount, split_exact, split_quantized

weights_int = st.lists(st.integers(0, 10**12), min_size=1, max_size=20).filter(lambda w: sum(w) > 0)
weights_float = st.lists(st.floats(0.0, 1e9, allow_nan=False, allow_infinity=False),
                         min_size=1, max_size=20).filter(lambda w: sum(w) > 0)


def check(total, weights, parts):
    assert parts.dtype == np.int64
    assert int(parts.sum()) == total
    assert (parts >= 0).all()
    W = sum(Fraction(x) for x in weights)
    for p, x in zip(parts.tolist(), weights):
        exact = total * Fraction(x) / W
        assert exact - 1 < p < exact + 1  # floor or floor + 1
        if x == 0:
            assert p == 0


@settings(max_examples=300, deadline=None)
@given(total=st.integers(0, 2**53), weights=st.one_of(weights_int, weights_float))
def test_split_sums_exactly_and_is_proportional(total, weights):
    parts = split_amount(total, np.asarray(weights))
    check(total, weights, parts)
    assert np.array_equal(parts, split_amount(total, np.asarray(weights)))  # deterministic


@settings(max_examples=200, deadline=None)
@given(total=st.integers(0, 2**53), q=st.lists(st.integers(0, 2**26), min_size=1, max_size=30)
       .filter(lambda q: 0 < sum(q) < 2**31))
def test_kernel_equals_big_int_path_and_py_func(total, q):
    a = split_quantized(np.int64(total), np.asarray(q, dtype=np.int64))
    assert np.array_equal(a, split_exact(total, q))
    assert np.array_equal(a, split_quantized.py_func(np.int64(total), np.asarray(q, dtype=np.int64)))


def test_ties_go_to_lower_index():
    assert split_amount(2, [1, 1, 1]).tolist() == [1, 1, 0]
    assert split_amount(1, [1.0, 1.0]).tolist() == [1, 0]
    assert split_amount(10**15, [1, 1, 1]).sum() == 10**15


@pytest.mark.parametrize("total,weights", [(-1, [1]), (2**53 + 1, [1]), (5, []), (5, [0, 0]),
                                           (5, [1, -1]), (5, [1.0, float("nan")]), (5, [-0.5, 1.0])])
def test_rejects_bad_input(total, weights):
    with pytest.raises(ValueError):
        split_amount(total, weights)
