"""History never changes silently: the store records its ledger policy; a writer with another
policy refuses to start and names each difference; ``poa policy apply`` changes policy at an
epoch boundary, never rewrites a closed epoch, and replays identically afterwards (a key
rollout included: events accepted under the old rules stay accepted)."""
from __future__ import annotations

import json

import pytest
from nacl.signing import SigningKey
from support.events_factory import contribution, model, raw, scenario, usage

from poa_stream.processors.core import Core
from poa_stream.processors.replay import process_all, replay_into, restore
from poa_stream.sinks import policy_log
from poa_stream.sinks.lease import Lease
from poa_stream.streams.policy import Policy, PolicyMismatch, PolicySchedule
from poa_stream.streams.signing import sign_event

C, M, U = "poa.contributions", "poa.models", "poa.usage"


def day2(minute: int) -> str:
    return f"2026-01-02T{minute // 60:02d}:{minute % 60:02d}:00Z"


def test_policy_fingerprint_and_diff():
    a, b = Policy(), Policy(share_operator_bps=1500, share_protocol_bps=1000, neardup_threshold=0.7)
    assert a.fingerprint() == Policy().fingerprint() and a.fingerprint() != b.fingerprint()
    assert a.diff(b) == ["share_operator_bps: 2000 -> 1500", "share_protocol_bps: 500 -> 1000",
                         "neardup_threshold: 0.8 -> 0.7"]
    with pytest.raises(ValueError, match="sum to 10000"):
        Policy(share_operator_bps=1)


def test_settings_build_the_policy_from_env_file_and_keys(settings, tmp_path):
    f = tmp_path / "policy.json"
    f.write_text(json.dumps({"quality_min_reasons": 3, "spam_prior": 0.1}))
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"bob": "11" * 32, "alice": "22" * 32}))
    p = settings.model_copy(update={"policy_file": f, "keys_file": keys, "epoch_s": 3600}).policy()
    assert (p.quality_min_reasons, p.spam_prior, p.epoch_s) == (3, 0.1, 3600)
    assert list(p.keys) == ["alice", "bob"]


@pytest.mark.parametrize("change, named", [
    ({"neardup_threshold": 0.6}, ["neardup_threshold: 0.8 -> 0.6"]),
    ({"epoch_s": 3600, "share_operator_bps": 1500, "share_protocol_bps": 1000},
     ["share_operator_bps: 2000 -> 1500", "share_protocol_bps: 500 -> 1000", "epoch_s: 86400 -> 3600"]),
])
def test_a_writer_with_another_policy_refuses_to_start(settings, sink, change, named):
    replay_into(scenario()[:5], settings, sink)
    n = sink.scalar(f"SELECT count() FROM {sink.database}.events")
    with pytest.raises(PolicyMismatch) as info:
        replay_into(scenario()[5:], settings.model_copy(update=change), sink)
    for d in named:
        assert d in str(info.value)
    assert "poa policy apply" in str(info.value)
    assert sink.scalar(f"SELECT count() FROM {sink.database}.events") == n  # nothing written
    assert Lease(sink, settle_s=0).acquire()  # and the lease was given back


def test_policy_change_takes_effect_at_an_epoch_boundary_and_replays_identically(settings, sink):
    day1 = scenario()
    replay_into(day1, settings, sink)
    db = sink.database
    new = settings.model_copy(update={"share_operator_bps": 1000, "share_contributors_bps": 8000})
    with pytest.raises(ValueError, match="too early"):
        policy_log.apply(sink, new.policy(), effective_epoch=0)
    with pytest.raises(ValueError, match="fixed for a store's life"):
        policy_log.apply(sink, settings.model_copy(update={"epoch_s": 3600}).policy(), None)
    version, epoch, changes = policy_log.apply(sink, new.policy(), None)
    assert version == 2 and epoch == 20455 and "share_operator_bps: 2000 -> 1000" in changes
    later = [(U, usage("d2u1", "d2r1", "m-base", 1_000_000, "Answer: nothing matches", minute=0)
              .replace(b"2026-01-01T00:00:00Z", day2(0).encode())),
             (U, usage("d3u1", "d3r1", "m-base", 10, "x", minute=0)
              .replace(b"2026-01-01T00:00:00Z", b"2026-01-03T00:00:00Z"))]
    replay_into(later, new, sink)
    _, op = sink.query(f"SELECT epoch, amount FROM {db}.reward_ledger WHERE role = 'operator' "
                       "AND ref_event_id = 'd2u1'")
    assert op == [(20455, 100_000)]  # 10% under the new policy
    _, old_ops = sink.query(f"SELECT amount FROM {db}.reward_ledger WHERE role = 'operator' "
                            "AND ref_event_id = 'e11'")
    assert old_ops == [(200_001,)]  # 20% of 1_000_003 (largest remainder), under the old policy
    _, epochs = sink.query(f"SELECT epoch, merkle_root, policy_fingerprint FROM {db}.epochs ORDER BY epoch")
    _, old_only = process_all(settings, day1 + later)  # had the policy never changed
    old_root = next(r["merkle_root"] for r in old_only.rows["epochs"] if r["epoch"] == 20454)
    assert epochs[0][:2] == (20454, old_root)  # epoch 20454 closed exactly as under the old policy
    assert epochs[0][2] == settings.policy().fingerprint()
    assert epochs[1][2] == new.policy().fingerprint()
    # restart under the new policy: the whole log replays through the schedule, no divergence
    core = Core(new, policy_log.open_schedule(sink, new.policy()))
    Lease(sink, settle_s=0).acquire()
    assert restore(core, sink) == sink.scalar(f"SELECT max(seq) FROM {db}.events")
    # and the old configuration is now the one refused
    sink.lease.release()
    with pytest.raises(PolicyMismatch, match="share_operator_bps: 1000 -> 2000"):
        replay_into([], settings, sink)


def test_key_rollout_keeps_earlier_unsigned_events(settings, sink, tmp_path):
    """The documented rollout (a keys file and enforcement) after unsigned history: the
    rebuilt core keeps every earlier event, later events must be signed."""
    op_key = SigningKey.generate()
    text = "operators of the base model answer with spans of the contributed legal text " * 2
    history = [(C, contribution("h1", "c1", "alice", "dn", text, 0)),
               (M, model("h2", "m1", "op", ["dn"], minute=1)),
               (U, usage("h3", "r1", "m1", 1_000, text, 2))]
    replay_into(history, settings, sink)
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"op": op_key.verify_key.encode().hex()}))
    rolled = settings.model_copy(update={"keys_file": keys, "require_signatures": True})
    with pytest.raises(PolicyMismatch, match=r"require_signatures: False -> True.*keys\[op\]"):
        replay_into([], rolled, sink)
    policy_log.apply(sink, rolled.policy(), None, note="key rollout")
    unsigned = json.loads(usage("n1", "r2", "m1", 2_000, text, 0))
    unsigned["ts"] = day2(5)
    signed = sign_event({**unsigned, "event_id": "n2", "request_id": "r3", "ts": day2(6)}, "op", op_key)
    core = replay_into([(U, raw(unsigned)), (U, raw(signed))], rolled, sink)
    assert list(core.contribs) == ["c1"] and list(core.models) == ["m1"]  # history kept
    db = sink.database
    _, dl = sink.query(f"SELECT event_id, reason FROM {db}.deadletter")
    assert dl == [("n1", "unsigned event from 'op', which has a registered key")]
    _, paid = sink.query(f"SELECT ref_event_id, sum(amount) FROM {db}.reward_ledger "
                         "WHERE source = 'fee' GROUP BY ref_event_id ORDER BY ref_event_id")
    assert paid == [("h3", 1_000), ("n2", 2_000)]
    again = replay_into([], rolled, sink)  # a restart replays the log under the schedule
    assert again.seq == core.seq and list(again.models) == ["m1"]


def test_schedule_refuses_structural_changes():
    with pytest.raises(ValueError, match="structural"):
        PolicySchedule([(0, Policy()), (5, Policy(span_min_tokens=6))])
    s = PolicySchedule([(0, Policy()), (5, Policy(influence_mix=0.5))])
    assert s.at(4).influence_mix == 0.3 and s.at(5).influence_mix == 0.5 and s.at(None) is s.base
