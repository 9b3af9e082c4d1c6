"""Escrow (processors/escrow.py): credit to a contribution not yet accepted is held, then
released to its contributor when validators accept it, or forfeited to its datanet's pool
when they reject it; every step exact, in the epoch roots and on the reward stream."""
from __future__ import annotations

from support.events_factory import LEGAL_DE, MEDICAL, contribution, model, usage, validation

from poa_stream.processors.replay import process_all
from poa_stream.streams import topics

C, V, M, U = "poa.contributions", "poa.validations", "poa.models", "poa.usage"
DAY2 = "2026-01-02T00:00:00Z"
# real prose, not from our generator (Darwin, On the Origin of Species, 1859)
DARWIN = ("When we look to the individuals of the same variety or sub-variety of our older cultivated "
          "plants and animals one of the first points which strikes us is that they generally differ "
          "more from each other than do the individuals of any one species or variety in a state of nature")
FEE = 1_000_000


def _votes(cid: str, verdict: str, minute: int, n: int = 3) -> list:
    return [(V, validation(f"v-{cid}-{k}", f"val{k}", cid, verdict, minute + k)) for k in range(n)]


def _world(extra_usage: bool = True) -> list:
    ev = [(C, contribution("e1", "a", "alice", "d", DARWIN, 0)),
          (C, contribution("e2", "b", "bob", "d", MEDICAL, 0)),
          (C, contribution("e3", "c", "carol", "d", LEGAL_DE, 0))]
    ev += _votes("b", "accept", 1)
    ev += [(M, model("e4", "M", "op", ["d"], minute=5)),
           (U, usage("u1", "r1", "M", FEE, "Darwin wrote: " + DARWIN, 10)),
           (U, usage("u2", "r2", "M", FEE, "Das Gesetz: " + LEGAL_DE, 11))]
    ev += _votes("a", "accept", 20) + _votes("c", "reject", 30)
    if extra_usage:
        ev.append((U, usage("u3", "r3", "M", FEE, "Again: " + DARWIN, 40)))
    ev.append((M, model("close", "Z", "op-z", ["other"], ts=DAY2)))  # closes epoch 1
    return ev


def _rows(out, **match):
    return [r for r in out.rows["reward_ledger"] if all(r[k] == v for k, v in match.items())]


def test_credit_is_held_then_released_or_forfeited_exactly(settings):
    core, out = process_all(settings, _world())
    assert [core.contribs[x].status for x in "abc"] == ["accepted", "accepted", "rejected"]
    # held: the usage's contributor share went to escrow, not to alice or carol
    held_a = _rows(out, ref_event_id="u1", role="escrow")
    held_c = _rows(out, ref_event_id="u2", role="escrow")
    assert [r["account"] for r in held_a] == ["escrow:a"] and [r["account"] for r in held_c] == ["escrow:c"]
    assert not _rows(out, ref_event_id="u1", role="contributor")
    for ref in ("u1", "u2", "u3"):  # every usage's entries still sum exactly to its fee
        assert sum(r["amount"] for r in _rows(out, ref_event_id=ref)) == FEE
    H, H2 = held_a[0]["amount"], held_c[0]["amount"]
    assert H > 0.6 * FEE and H2 > 0.6 * FEE
    # released when "a" was accepted: -H on escrow:a, +H to alice, at the accepting vote
    rel = _rows(out, source="escrow", account="alice")
    assert len(rel) == 1 and rel[0]["amount"] == H and rel[0]["role"] == "contributor"
    assert rel[0]["ref_event_id"] == "escrow:a:v-a-0"  # the first accept decided it
    assert sum(r["amount"] for r in _rows(out, account="escrow:a")) == 0
    # forfeited when "c" was rejected: to pool:d, which the epoch close settles over the
    # datanet's eligible contributions (a and b); carol receives nothing at all
    fft = _rows(out, source="escrow", account="pool:d")
    assert len(fft) == 1 and fft[0]["amount"] == H2 and fft[0]["role"] == "pool"
    assert sum(r["amount"] for r in _rows(out, account="escrow:c")) == 0
    assert not [r for r in out.rows["reward_ledger"] if r["account"] == "carol"]
    assert sum(r["amount"] for r in _rows(out, account="pool:d")) == 0  # the pool settled whole
    settled = {r["account"] for r in _rows(out, source="pool", role="contributor")}
    assert settled == {"alice", "bob"}
    # after acceptance new usage pays alice directly
    assert [r["account"] for r in _rows(out, ref_event_id="u3", role="contributor")] == ["alice"]
    assert not _rows(out, ref_event_id="u3", role="escrow")
    # nothing created or lost: the ledger sums to fees plus emissions
    emitted = sum(e["emitted"] for e in out.rows["epochs"])
    assert sum(r["amount"] for r in out.rows["reward_ledger"]) == 3 * FEE + emitted
    assert core.escrow.held == {}


def test_escrow_rows_are_in_the_epoch_root_and_on_the_reward_stream(settings):
    _, out = process_all(settings, _world())
    e = out.rows["epochs"][0]
    in_epoch = [r for r in out.rows["reward_ledger"] if r["epoch"] == e["epoch"]]
    assert any(r["source"] == "escrow" for r in in_epoch)
    assert e["entries"] == len(in_epoch)  # every entry of the epoch is a leaf of its root
    keys = [k for t, k, _ in out.messages if t == topics.REWARDS]
    assert keys.count("escrow:a") == 2 and keys.count("escrow:c") == 2  # held, then resolved


def test_pending_credit_stays_held_until_a_decision(settings):
    ev = [e for e in _world(extra_usage=False) if not e[1].decode().count('"contribution_id": "c"')
          or e[0] != V]
    core, out = process_all(settings, ev)
    assert core.contribs["c"].status == "pending"
    assert core.escrow.held == {core.contribs["c"].idx: _rows(out, ref_event_id="u2", role="escrow")[0]["amount"]}
    assert not _rows(out, account="pool:d", source="escrow")


def test_replay_gives_the_same_escrow_rows(settings, tmp_path):
    _, a = process_all(settings, _world())
    _, b = process_all(settings.model_copy(update={"home": tmp_path / "other"}), _world())
    key = lambda r: (r["seq"], r["entry_id"])  # noqa: E731
    assert sorted(map(key, a.rows["reward_ledger"])) == sorted(map(key, b.rows["reward_ledger"]))
    assert [e["merkle_root"] for e in a.rows["epochs"]] == [e["merkle_root"] for e in b.rows["epochs"]]


def test_entry_ids_do_not_depend_on_seq(settings, tmp_path):
    """A dead letter logged first shifts every seq by one; the escrow entries (ids, amounts)
    must not move: a worker that logged messages in another arrival order writes the same
    ledger (tests/processors/test_faults_kafka.py kills and restarts it)."""
    _, a = process_all(settings, _world())
    _, b = process_all(settings.model_copy(update={"home": tmp_path / "other"}),
                       [(C, b"{not json")] + _world())
    ids = lambda out: sorted((r["entry_id"], r["amount"]) for r in out.rows["reward_ledger"])  # noqa: E731
    assert any(r["source"] == "escrow" for r in a.rows["reward_ledger"])
    assert ids(a) == ids(b)
