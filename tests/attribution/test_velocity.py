"""attribution.velocity: burst kernel vs .py_func and a brute-force sum; scenario farm bursts."""
import json
import math
from datetime import datetime

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from poa_stream.attribution.velocity import Interner, VelocityTracker, observe_loop
from poa_stream.scenario import generate

seqs = st.lists(st.tuples(st.integers(0, 4), st.floats(0, 5_000, allow_nan=False)), max_size=60)


def ref_scores(obs, window_s=600.0, alpha=0.1, prior_gap_s=86_400.0):
    """Brute force: recent = sum over the account's uploads of exp(-(now - t_j) / window),
    usual pace = the closed-form EWMA of ln(1 + gap) over all earlier gaps."""
    hist: dict[int, list[float]] = {}
    out = []
    for acc, ts in obs:
        h = hist.setdefault(acc, [])
        clock = [h[0]] if h else []
        for t in h[1:]:
            clock.append(max(clock[-1], t))  # last_ts never decreases
        gaps = [max(0.0, t - c) for t, c in zip(h[1:], clock)]
        lg = math.log1p(prior_gap_s)
        for g in gaps:
            lg = (1 - alpha) * lg + alpha * math.log1p(g)
        h.append(ts)
        now = [h[0]]
        for t in h[1:]:
            now.append(max(now[-1], t))
        # decayed count with gaps clamped at 0, computed as a sum of decays over later gaps
        g_all = [max(0.0, t - c) for t, c in zip(h[1:], now)]
        recent = sum(math.exp(-sum(g_all[j:]) / window_s) for j in range(len(h)))
        usual = math.expm1(lg)
        out.append(recent / max(1.0, window_s / usual))
    return out


@settings(max_examples=150, deadline=None)
@given(obs=seqs)
def test_observe_matches_brute_force_and_py_func(obs):
    accs = np.array([a for a, _ in obs], dtype=np.int64)
    ts = np.cumsum([t for _, t in obs]) if obs else np.zeros(0)
    ts = np.asarray(ts, dtype=np.float64) - (accs % 2) * 300.0  # some accounts go back in time
    got = VelocityTracker(capacity=2).observe_many(accs, ts)
    ref = ref_scores(list(zip(accs.tolist(), ts.tolist())))
    assert np.allclose(got, ref, rtol=1e-9, atol=1e-12)
    t2 = VelocityTracker(capacity=8)
    py = observe_loop.py_func(t2.last_ts, t2.log_gap, t2.recent, t2.count, accs, ts, 600.0, 0.1, math.log1p(86_400.0))
    assert np.allclose(got, py, rtol=1e-12)


def test_burst_is_relative_to_the_usual_pace():
    vt = VelocityTracker()
    assert vt.observe(0, 0.0) == 1.0  # first upload: at the usual pace by definition
    scores = [vt.observe(0, 86_400.0 + 10 * k) for k in range(5)]
    assert scores[-1] > 4.5  # five uploads within a minute from a once-a-day account
    assert vt.uploads(0) == 6 and vt.usual_gap_s(0) < 86_400.0
    fast = VelocityTracker()
    for k in range(200):
        s = fast.observe(3, 5.0 * k)  # a bulk uploader, every 5 s, always
    assert s < 1.5 and math.isnan(fast.usual_gap_s(1))
    with pytest.raises(ValueError):
        fast.observe(-1, 0.0)


def test_interner():
    it = Interner()
    assert [it("b"), it("a"), it("b")] == [0, 1, 0]
    assert it.names == ["b", "a"] and len(it) == 2 and "a" in it and it.get("zz") == -1


def test_scenario_farm_second_uploads_burst():
    sc = generate(seed=7)
    roles = sc.truth["accounts"]
    it, vt, by_role = Interner(), VelocityTracker(), {}
    for topic, raw in sc.records:
        try:
            o = json.loads(raw)
        except ValueError:
            continue
        if topic != "poa.contributions" or o.get("contribution_id") not in sc.truth["contributions"]:
            continue
        ts = datetime.fromisoformat(o["ts"].replace("Z", "+00:00")).timestamp()
        a = o["contributor"]
        by_role.setdefault(roles[a], {}).setdefault(a, []).append(vt.observe(it(a), ts))
    farm = [max(s) for s in by_role["farm"].values()]
    honest = [x for s in by_role["honest"].values() for x in s]
    assert min(farm) > 1.9  # every farm account posts twice within seconds
    assert np.median(honest) < 1.05 and np.mean(np.array(honest) > 1.9) < 0.01
