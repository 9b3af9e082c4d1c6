"""Economics under wash usage: what each attack of poa/adversarial.py earns, rule against rule.

For each strategy and emission-to-fee ratio, the world runs through the production core
(``processors.replay.process_all``, the path ``poa replay`` takes, without a store) with the
attacker's fake usage and without it (the baseline: same accounts, supply and models), under
the v1 rule (``emission_contributor_basis = "usage"``: emissions split by attribution evidence
per usage event) and the current one (``"validated_supply"``). Columns:

- attacker pays: the fees of the fake usage (tokens);
- attacker net: (attacker rewards with the attack - without) - fees paid (tokens);
- honest keep: honest contributors' rewards with the attack / without;
- wash flags: the suspected wash usage flags raised (processors/wash.py), current rule.

The baseline is the peer: the same world without the attack. Deterministic (seeded worlds).
Usage: python bench/economics.py [--fake 3000] [--ratios 0.1,1,10] [--strategies fee0,...]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKEN = 1_000_000


def run(strategy: str, ratio: float, attack: bool, basis: str, n_fake: int) -> tuple[dict, int]:
    from poa_stream import adversarial as A
    from poa_stream.settings import Settings
    from poa_stream.processors.replay import process_all
    with tempfile.TemporaryDirectory() as d:
        pf = Path(d) / "policy.json"
        pf.write_text(json.dumps({**A.policy_for(strategy, ratio), "emission_contributor_basis": basis}))
        _, out = process_all(Settings(home=Path(d) / "home", policy_file=pf),
                             A.world(strategy, ratio, attack, n_fake=n_fake))
    wash = sum(1 for f in out.rows.get("flags", []) if f["reason"].startswith("wash_"))
    return A.outcome(out.rows, strategy), wash


def main() -> None:
    from poa_stream import adversarial as A
    ap = argparse.ArgumentParser()
    ap.add_argument("--fake", type=int, default=3000)
    ap.add_argument("--ratios", default="0.1,1,10")
    ap.add_argument("--strategies", default=",".join(A.STRATEGIES))
    a = ap.parse_args()
    ratios = [float(r) for r in a.ratios.split(",")]
    print(f"| strategy ({a.fake:,} fake usages) | ratio | attacker pays (tokens) | attacker net, v1 usage rule "
          f"| attacker net, validated supply | honest keep, v1 | honest keep, now | wash flags |")
    print("|---|---|---|---|---|---|---|---|")
    for strategy in a.strategies.split(","):
        for ratio in ratios:
            cells = {}
            for basis in ("usage", "validated_supply"):
                atk, wash = run(strategy, ratio, True, basis, a.fake)
                base, _ = run(strategy, ratio, False, basis, a.fake)
                net = atk["attacker_rewards"] - base["attacker_rewards"] - atk["attacker_fees"]
                keep = atk["honest_contributors"] / base["honest_contributors"]
                cells[basis] = (net, keep, wash, atk["attacker_fees"])
            (nv, kv, _, fees), (nn, kn, wash, _) = cells["usage"], cells["validated_supply"]
            print(f"| {strategy} | {ratio:g} | {fees / TOKEN:,.3f} | {nv / TOKEN:+,.1f} | {nn / TOKEN:+,.1f} "
                  f"| {kv:.0%} | {kn:.0%} | {wash} |", flush=True)


if __name__ == "__main__":
    main()
