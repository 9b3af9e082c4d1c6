from datetime import datetime, timezone

import numpy as np
from hypothesis import given, settings, strategies as st

from poa_stream.processors.ledger import fee_credits

TS = datetime(2026, 1, 1, tzinfo=timezone.utc)


def credits(fee, contributors=("a", "b"), cw=(1.0, 2.0), validators=("v",), vw=(1.0,),
            shares=(7000, 2000, 500, 500)):
    return fee_credits(fee=fee, shares_bps=shares, operator="op", contributors=list(contributors),
                       contributor_weights=list(cw), validators=list(validators),
                       validator_weights=list(vw), treasury="treasury", ref_event_id="u1",
                       ts=TS, epoch=0, seq=1)


def test_roles_and_exact_sum():
    rows = credits(1_000_003)
    by = {(r["role"], r["account"]): r["amount"] for r in rows}
    assert sum(by.values()) == 1_000_003
    assert by[("operator", "op")] == 200_001 or by[("operator", "op")] == 200_000
    assert by[("contributor", "b")] > by[("contributor", "a")]
    assert by[("protocol", "treasury")] == 50_000


def test_missing_recipients_go_to_treasury():
    rows = credits(1000, contributors=(), cw=(), validators=(), vw=())
    by = {(r["role"], r["account"]): r["amount"] for r in rows}
    assert by == {("operator", "op"): 200, ("protocol", "treasury"): 800}


def test_zero_fee_has_no_rows():
    assert credits(0) == []


def test_entry_ids_deterministic_and_unique():
    a, b = credits(12345), credits(12345)
    assert [r["entry_id"] for r in a] == [r["entry_id"] for r in b]
    assert len({r["entry_id"] for r in a}) == len(a)


@settings(max_examples=200, deadline=None)
@given(fee=st.integers(0, 2**53),
       cw=st.lists(st.floats(0.0, 1e6, allow_nan=False), min_size=0, max_size=12),
       vw=st.lists(st.floats(0.0, 1e3, allow_nan=False), min_size=0, max_size=5),
       shares=st.lists(st.integers(0, 10_000), min_size=3, max_size=3).filter(lambda s: sum(s) <= 10_000))
def test_credits_sum_exactly_to_fee(fee, cw, vw, shares):
    shares = tuple(shares) + (10_000 - sum(shares),)
    rows = credits(fee, contributors=[f"c{i % 5}" for i in range(len(cw))], cw=cw,
                   validators=[f"v{i}" for i in range(len(vw))], vw=vw, shares=shares)
    assert sum(r["amount"] for r in rows) == fee
    assert all(r["amount"] > 0 for r in rows)
    assert all(isinstance(r["amount"], int) for r in rows)
