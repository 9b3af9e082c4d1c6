"""Online Dawid-Skene validator reliability: binary truth, stake-aware, updated per vote.

Contract:
- Validators and contributions are dense ints ``>= 0`` (``attribution.velocity.Interner``);
  truth is binary (good = accept-worthy); a vote is accept (True) or reject (False); stake is in
  micro-units (>= 0). One vote per (validator, contribution): a second one raises ValueError.
- Validator ``v``: confusion ``theta[v, t, a] = P(vote a | truth t)`` (t, a: 0 = bad / reject,
  1 = good / accept) = soft counts plus a Dirichlet prior centred on ``prior_reliability``, worth
  ``prior_strength`` votes at first and fading as ``prior_votes / (prior_votes + n_v)`` with the
  validator's votes ``n_v`` (strong early, so EM cannot collapse into the label-flipped
  solution; weak later, so well-observed validators are judged on their record).
- Contribution ``c``: prior ``pi_c`` = the learned class prior (mean posterior of the OTHER voted
  contributions without an external prior; Beta prior ``class_prior_strength`` at ``prior_good``)
  unless an external prior is set (``set_prior`` / ``vote(prior=)``: spam evidence lowers it). Posterior ``P(good) = sigmoid(logit(pi_c) + sum_votes w * llr)`` over ALL
  its votes with the CURRENT confusions, ``llr = log(theta[v,1,a] / theta[v,0,a])``.
- Stake: ``w = clip(log2(1 + stake / stake_ref), w_min, w_max)``, by default 1 token -> 1.0 and
  capped at 1.0: a vote with little stake counts less (an unstaked sybil validator is tempered),
  but stake never amplifies a vote beyond one observation, so stake cannot buy an outcome; the
  validator's confusion decides the sign and size of its vote.
- ``allow_inverted=True`` (default, as in Dawid-Skene): a validator below chance is read
  inverted (a colluder's rare reject is strong evidence of good). ``False`` clamps each vote's
  evidence to its own direction (more conservative; a few points less accurate on the scenario).
- Soft EM per vote: each vote holds the posterior ``q`` it is credited with (``q`` to the good row,
  ``1 - q`` to the bad row of its validator's counts); a vote on ``c`` re-credits all of ``c``'s
  votes with the new posterior (O(votes of c)), then re-evaluates ``retro`` (32) contributions
  round-robin from a ring of the last ``retro_window`` (1024) votes (bounded retro-correction;
  these defaults keep it within 1 point of batch EM on scenario seeds 1-7).
  ``sweep(passes)`` re-evaluates every voted contribution (a full EM pass, e.g. per epoch).
- ``reliability(v)``: balanced accuracy ``(theta[v,1,1] + theta[v,0,0]) / 2`` (0.5 = coin flip);
  ``fee_weight(v) = max(0, 2 * reliability - 1)`` (informedness: 0 at or below chance).
- ``suspects(spam_mask)``: ``[(validator, reason, score)]``: ``accepts_spam`` (accepts concentrate
  on contributions that vote-independent evidence marks as spam) and ``anti_consensus``.
- State: numpy arrays grown by doubling; no randomness: the same vote sequence gives the same
  floats. Votes: ``vi[k] = (validator, contribution, accept, next vote on that contribution)``,
  ``vf[k] = (weight, credited q)``; ``head[c]`` = its latest vote or -1.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

_EPS = 1e-4


@nb.njit(cache=True, nogil=True)
def refresh(conf, pc, vi, vf, head, lprior, ext, cls, post, c, prm):
    """Recompute ``c``'s posterior from all its votes and re-credit them; ``prm`` =
    (clamp, prior_votes, retro). ``cls`` = [sum of posteriors, count, a0, b0] (class prior)."""
    if ext[c]:
        L = lprior[c]
    else:  # leave-one-out: the class prior of the others
        own = 1.0 if head[c] >= 0 else 0.0
        pg = (cls[0] - own * post[c] + cls[2]) / (cls[1] - own + cls[2] + cls[3])
        L = math.log(pg / (1.0 - pg))
    e = head[c]
    while e >= 0:
        v, a = vi[e, 0], vi[e, 2]
        n1 = conf[v, 1, 0] + conf[v, 1, 1]
        n0 = conf[v, 0, 0] + conf[v, 0, 1]
        f = 1.0 if math.isinf(prm[1]) else prm[1] / (prm[1] + n0 + n1)
        g = (conf[v, 1, a] + f * pc[1, a]) / (n1 + f * (pc[1, 0] + pc[1, 1]))
        b = (conf[v, 0, a] + f * pc[0, a]) / (n0 + f * (pc[0, 0] + pc[0, 1]))
        llr = math.log(g / b)
        if prm[0] > 0.0:
            llr = max(llr, 0.0) if a == 1 else min(llr, 0.0)
        L += vf[e, 0] * llr
        e = vi[e, 3]
    p = 1.0 / (1.0 + math.exp(-min(max(L, -40.0), 40.0)))
    if not ext[c] and head[c] >= 0:
        cls[0] += p - post[c]
    post[c] = p
    e = head[c]
    while e >= 0:
        d = p - vf[e, 1]
        conf[vi[e, 0], 1, vi[e, 2]] += d
        conf[vi[e, 0], 0, vi[e, 2]] -= d
        vf[e, 1] = p
        e = vi[e, 3]
    return p


@nb.njit(cache=True, nogil=True)
def add_votes(conf, pc, vi, vf, head, lprior, ext, cls, post, vcount, ring, st, nv0,
              validators, contribs, accepts, weights, prm):
    """Append votes at ``nv0..``; returns (posterior after each vote, 0) or, at a duplicate vote
    ``k``, (the first ``k`` posteriors, -1 - k). ``st`` = [ring fill, write pos, cursor]."""
    out = np.empty(validators.shape[0], dtype=np.float64)
    W = ring.shape[0]
    for k in range(validators.shape[0]):
        v, c, a = validators[k], contribs[k], accepts[k]
        e = head[c]
        while e >= 0:
            if vi[e, 0] == v:
                return out[:k], -1 - k
            e = vi[e, 3]
        if head[c] < 0 and not ext[c]:  # first vote: c joins the class-prior estimate
            cls[0] += post[c]
            cls[1] += 1.0
        n = nv0 + k
        vi[n, 0], vi[n, 1], vi[n, 2], vi[n, 3] = v, c, a, head[c]
        vf[n, 0], vf[n, 1] = weights[k], 0.0
        head[c] = n
        conf[v, 0, a] += 1.0  # credited to "bad" (q = 0) until refresh moves it
        vcount[v] += 1
        out[k] = refresh(conf, pc, vi, vf, head, lprior, ext, cls, post, c, prm)
        if W > 0:
            ring[st[1]] = c
            st[1] = (st[1] + 1) % W
            st[0] = min(st[0] + 1, W)
            for _ in range(int(prm[2])):
                st[2] = st[2] % st[0]
                refresh(conf, pc, vi, vf, head, lprior, ext, cls, post, ring[st[2]], prm)
                st[2] += 1
    return out, 0


def _logit(p: float) -> float:
    p = min(1 - _EPS, max(_EPS, float(p)))
    return math.log(p / (1 - p))


def _extend(arr: np.ndarray, n: int, fill) -> np.ndarray:
    if n <= arr.shape[0]:
        return arr
    new = np.full((max(n, 2 * arr.shape[0]),) + arr.shape[1:], fill, dtype=arr.dtype)
    new[:arr.shape[0]] = arr
    return new


class OnlineDawidSkene:
    """Online, stake-aware Dawid-Skene over binary verdicts (see the module contract)."""

    def __init__(self, prior_good: float = 0.7, prior_reliability: float = 0.8, prior_strength: float = 4.0,
                 prior_votes: float = 25.0, class_prior_strength: float = 10.0, stake_ref: float = 1e6,
                 w_min: float = 0.25, w_max: float = 1.0, allow_inverted: bool = True, retro: int = 32,
                 retro_window: int = 1024):
        if not (0 < prior_good < 1 and 0.5 <= prior_reliability < 1 and prior_strength > 0 and prior_votes > 0):
            raise ValueError("need 0 < prior_good < 1, 0.5 <= prior_reliability < 1, prior_strength > 0 "
                             "and prior_votes > 0 (math.inf: a prior that never fades)")
        self.prior_good, self.stake_ref, self.w_min, self.w_max = prior_good, stake_ref, w_min, w_max
        self.prm = np.array([0.0 if allow_inverted else 1.0, prior_votes, max(0, int(retro))])
        r, s = prior_reliability, prior_strength
        self.pc = np.array([[s * r, s * (1 - r)], [s * (1 - r), s * r]], dtype=np.float64)
        self.cls = np.array([0.0, 0.0, class_prior_strength * prior_good, class_prior_strength * (1 - prior_good)])
        self.conf = np.zeros((8, 2, 2), dtype=np.float64)
        self.vcount = np.zeros(8, dtype=np.int64)
        self.head = np.full(64, -1, dtype=np.int64)
        self.lprior = np.full(64, _logit(prior_good), dtype=np.float64)
        self.ext = np.zeros(64, dtype=np.bool_)
        self.post = np.full(64, prior_good, dtype=np.float64)
        self.vi = np.zeros((256, 4), dtype=np.int64)
        self.vf = np.zeros((256, 2), dtype=np.float64)
        self.n_votes = 0
        self.version = 0  # bumped by every update: caches of reliability/fee_weight key on it
        self.ring = np.zeros(retro_window if retro > 0 else 0, dtype=np.int64)
        self.ring_state = np.zeros(3, dtype=np.int64)
        self._one, self._w = np.zeros(3, dtype=np.int64), np.zeros(1)  # scratch for vote()

    def _grow(self, n_validators: int, n_contribs: int, n_votes: int) -> None:
        self.conf, self.vcount = _extend(self.conf, n_validators, 0.0), _extend(self.vcount, n_validators, 0)
        self.head, self.ext = _extend(self.head, n_contribs, -1), _extend(self.ext, n_contribs, False)
        self.lprior = _extend(self.lprior, n_contribs, _logit(self.prior_good))
        self.post = _extend(self.post, n_contribs, self.prior_good)
        self.vi, self.vf = _extend(self.vi, n_votes, 0), _extend(self.vf, n_votes, 0.0)

    def _refresh(self, c: int) -> float:
        return float(refresh(self.conf, self.pc, self.vi, self.vf, self.head, self.lprior, self.ext,
                             self.cls, self.post, c, self.prm))

    def stake_weight(self, stake: float) -> float:
        """One vote's weight: ``clip(log2(1 + stake / stake_ref), w_min, w_max)`` (stake >= 0)."""
        return min(self.w_max, max(self.w_min, math.log2(1.0 + max(0.0, float(stake)) / self.stake_ref)))

    def stake_weights(self, stakes) -> np.ndarray:
        w = np.log2(1.0 + np.maximum(np.asarray(stakes, dtype=np.float64), 0.0) / self.stake_ref)
        return np.clip(w, self.w_min, self.w_max)

    # ---------------------------------------------------------------- updates
    def set_prior(self, contrib_idx: int, prior: float) -> float:
        """Give ``c`` an external prior P(good) (instead of the class prior); returns its posterior."""
        c = contrib_idx
        self.version += 1
        self._grow(0, c + 1, 0)
        if not self.ext[c] and self.head[c] >= 0:  # c leaves the class-prior estimate
            self.cls[0] -= self.post[c]
            self.cls[1] -= 1.0
        self.ext[c], self.lprior[c] = True, _logit(prior)
        return self._refresh(c) if self.head[c] >= 0 else self.posterior(c)

    def vote(self, validator_idx: int, contrib_idx: int, accept: bool, stake: float,
             prior: float | None = None) -> float:
        """Record one vote (and optionally ``c``'s external prior first); returns ``c``'s posterior."""
        if prior is not None:
            self.set_prior(contrib_idx, prior)
        v, c, one = int(validator_idx), int(contrib_idx), self._one
        one[0], one[1], one[2] = v, c, 1 if accept else 0
        self._w[0] = self.stake_weight(stake)
        return float(self._add(one[0:1], one[1:2], one[2:3], self._w, v, c, min(v, c))[0])

    def vote_many(self, validators, contribs, accepts, stakes) -> np.ndarray:
        """Votes in order, in one kernel call; returns the posterior after each vote."""
        v, c, a = (np.ascontiguousarray(x, dtype=np.int64) for x in (validators, contribs, accepts))
        w = self.stake_weights(stakes)
        if not (v.shape == c.shape == a.shape == w.shape) or v.ndim != 1:
            raise ValueError("validators, contribs, accepts and stakes must be 1-d and of the same length")
        if not v.size:
            return np.zeros(0)
        return self._add(v, c, a, w, int(v.max()), int(c.max()), min(int(v.min()), int(c.min())))

    def _add(self, v, c, a, w, vmax: int, cmax: int, lowest: int) -> np.ndarray:
        if lowest < 0:
            raise ValueError("validators and contributions are dense ints >= 0 (use Interner)")
        self.version += 1
        if vmax >= self.conf.shape[0] or cmax >= self.head.shape[0] or self.n_votes + v.size > self.vi.shape[0]:
            self._grow(vmax + 1, cmax + 1, self.n_votes + v.size)
        out, err = add_votes(self.conf, self.pc, self.vi, self.vf, self.head, self.lprior, self.ext, self.cls,
                             self.post, self.vcount, self.ring, self.ring_state, self.n_votes, v, c, a, w, self.prm)
        self.n_votes += out.shape[0]
        if err:
            k = -1 - err
            raise ValueError(f"validator {v[k]} already voted on contribution {c[k]} "
                             f"(the {k} votes before it were recorded)")
        return out

    def sweep(self, passes: int = 1) -> None:
        """Re-evaluate every voted contribution in index order (a full EM pass over all votes)."""
        self.version += 1
        for _ in range(passes):
            for c in np.flatnonzero(self.head >= 0):
                self._refresh(int(c))

    # ---------------------------------------------------------------- queries
    @property
    def class_prior(self) -> float:
        s, n, a0, b0 = self.cls
        return float((s + a0) / (n + a0 + b0))

    def posterior(self, contrib_idx: int) -> float:
        c = contrib_idx
        if c >= self.post.shape[0] or (self.head[c] < 0 and not self.ext[c]):
            return self.class_prior
        return float(self.post[c]) if self.head[c] >= 0 else float(1 / (1 + math.exp(-self.lprior[c])))

    def status(self, contrib_idx: int, accept_at: float = 0.8, reject_at: float = 0.2) -> str:
        p = self.posterior(contrib_idx)
        return "accepted" if p >= accept_at else "rejected" if p <= reject_at else "pending"

    def confusion(self, validator_idx: int) -> np.ndarray:
        """2x2 ``theta[t, a] = P(vote a | truth t)`` (rows: bad, good; columns: reject, accept)."""
        cnt = self.conf[validator_idx] if validator_idx < self.conf.shape[0] else np.zeros((2, 2))
        pv = self.prm[1]
        f = 1.0 if math.isinf(pv) else pv / (pv + cnt.sum())
        cnt = cnt + f * self.pc
        return cnt / cnt.sum(axis=1, keepdims=True)

    def reliability(self, validator_idx: int) -> float:
        th = self.confusion(validator_idx)
        return float(0.5 * (th[1, 1] + th[0, 0]))

    def fee_weight(self, validator_idx: int) -> float:
        return max(0.0, 2.0 * self.reliability(validator_idx) - 1.0)

    def votes(self, validator_idx: int) -> int:
        return int(self.vcount[validator_idx]) if validator_idx < self.vcount.shape[0] else 0

    def suspects(self, spam_mask, min_accepts: int = 10, min_share: float = 0.35, min_lift: float = 2.0,
                 min_votes: int = 20, max_reliability: float = 0.45) -> list[tuple[int, str, float]]:
        """``accepts_spam``: share of v's accepts on ``spam_mask`` contributions (bool over ids, from
        evidence independent of the votes) >= ``min_share`` and >= ``min_lift`` x the share over all
        accepts; score = that share. ``anti_consensus``: reliability <= ``max_reliability`` after
        ``min_votes`` votes; score = 1 - 2 * reliability. Sorted by validator, then reason."""
        n, nval = self.n_votes, self.conf.shape[0]
        m = np.asarray(spam_mask, dtype=bool)[:self.head.shape[0]]
        mask = np.concatenate([m, np.zeros(self.head.shape[0] - m.shape[0], dtype=bool)])
        acc = self.vi[:n, 2] == 1
        vv, on_spam = self.vi[:n, 0][acc], mask[self.vi[:n, 1][acc]]
        accepts = np.bincount(vv, minlength=nval)
        spam_acc = np.bincount(vv, weights=on_spam, minlength=nval)
        base = float(on_spam.mean()) if on_spam.size else 0.0
        out = []
        for v in range(nval):
            if accepts[v] >= min_accepts:
                share = float(spam_acc[v] / accepts[v])
                if share >= min_share and share >= min_lift * base:
                    out.append((v, "accepts_spam", round(share, 6)))
            rel = self.reliability(v)
            if self.vcount[v] >= min_votes and rel <= max_reliability:
                out.append((v, "anti_consensus", round(min(1.0, max(0.0, 1 - 2 * rel)), 6)))
        return out
