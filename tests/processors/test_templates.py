"""Templated text in the core (issue "fair rewards"): slot-filled copies of one template share
their words in order, not their 5-grams, so MinHash over 5-gram shingles misses them; a MinHash of
ordered word pairs (skip-bigrams)
finds template siblings of other accounts, and texts of ``template_farm_min_accounts``
accounts sharing one template are a template farm (spam, earning nothing), while validators
can still overrule. A text quoting another's long runs (a license) is a copy question, not
a template; one account's own series is not a farm."""
from __future__ import annotations

import json
import random

from support.events_factory import LEGAL_DE, contribution, validation

from poa_stream.settings import Settings
from poa_stream.processors.replay import process_all

C, V = "poa.contributions", "poa.validations"
AD = ("Looking for the best {0} in {1}? Our {2} {0} service offers {3} and {4} at the lowest price. "
      "Order your {0} now and get {5} free! Limited offer for {1} customers, call today. Thousands of "
      "happy {6} clients trust our {2} {0}.")
SLOTS = ("garden lamp river stone window carpet bottle ticket mirror pillow basket candle ladder "
         "blanket kettle helmet wallet bucket lantern saddle").split()
HONEST = ("When we look to the individuals of the same variety or sub-variety of our older cultivated "
          "plants and animals one of the first points which strikes us is that they generally differ "
          "more from each other than do the individuals of any one species or variety in a state of nature.")


MELVILLE = ("Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in "
            "my purse, and nothing particular to interest me on shore, I thought I would sail about a "
            "little and see the watery part of the world.")


def _run(tmp_path, records, **policy):
    tmp_path.mkdir(parents=True, exist_ok=True)
    pf = tmp_path / "policy.json"
    pf.write_text(json.dumps(policy))
    return process_all(Settings(home=tmp_path / "home", policy_file=pf), records)


def _ads(n: int, seed: int = 1) -> list[str]:
    R = random.Random(seed)
    return [AD.format(*R.sample(SLOTS, 7)) for _ in range(n)]


def _reasons(out, cid: str) -> set[str]:
    return {f["reason"] for f in out.rows.get("flags", []) if f["contribution_id"] == cid}


def test_template_farm_across_three_accounts_is_spam(tmp_path):
    recs = [(C, contribution("e0", "honest", "alice", "dn", HONEST, 1))]
    recs += [(C, contribution(f"e{k + 1}", f"ad{k}", f"spammer{k}", "dn", text, 10 + 7 * k))
             for k, text in enumerate(_ads(4))]
    core, out = _run(tmp_path, recs)
    assert core.contribs["honest"].status == "pending"
    for k in range(4):  # the first two are flagged once the third account joins
        c = core.contribs[f"ad{k}"]
        assert c.status == "spam", (k, c.status)
        assert "template_farm" in _reasons(out, f"ad{k}")
    # the published row of the earliest member follows its new status
    rows = [r for r in out.rows["contributions"] if r["contribution_id"] == "ad0"]
    assert rows[-1]["status"] == "spam"


def test_two_accounts_or_one_account_are_not_a_farm(tmp_path):
    ads = _ads(4, seed=2)
    two = [(C, contribution(f"e{k}", f"ad{k}", f"spammer{k % 2}", "dn", t, 10 + 7 * k)) for k, t in enumerate(ads)]
    core, out = _run(tmp_path / "two", two)
    assert all(core.contribs[f"ad{k}"].status == "pending" for k in range(4))
    assert not any("template_farm" in _reasons(out, f"ad{k}") for k in range(4))
    one = [(C, contribution(f"e{k}", f"ad{k}", "shop", "dn", t, 10 + 7 * k)) for k, t in enumerate(ads)]
    core, out = _run(tmp_path / "one", one)
    assert all(core.contribs[f"ad{k}"].status == "pending" for k in range(4))


def test_quoted_long_runs_are_not_a_template(tmp_path):
    """Three accounts quote one license under headers of their own: the texts share long
    runs of words (spans), which is what a copy is judged on, not a template."""
    heads = ["Upstream author Jane Roe wrote this parser for the archive tools in 2019 and keeps it "
             "maintained with help from the community of packagers",
             "Packaged by John Doe for the distribution with patches for the build system and the "
             "manual pages that were missing from the release tarball",
             "Copyright holders include Erika Mustermann and the contributors listed in the AUTHORS "
             "file shipped with the source of the package"]
    recs = [(C, contribution(f"e{k}", f"lic{k}", f"maint{k}", "legal", h + ". " + LEGAL_DE, 10 + 9 * k))
            for k, h in enumerate(heads)]
    core, out = _run(tmp_path, recs)
    for k in range(3):
        assert "template_farm" not in _reasons(out, f"lic{k}"), k
        assert "templated" not in _reasons(out, f"lic{k}"), k


def test_validators_overrule_a_template_farm_signal(tmp_path):
    recs = [(C, contribution(f"e{k}", f"ad{k}", f"spammer{k}", "dn", t, 10 + 7 * k)) for k, t in enumerate(_ads(3, 4))]
    recs += [(V, validation(f"v{j}", f"val{j}", "ad1", "accept", 60 + j)) for j in range(4)]
    core, out = _run(tmp_path, recs)
    assert core.contribs["ad0"].status == "spam" and core.contribs["ad2"].status == "spam"
    assert core.contribs["ad1"].status == "accepted"


def test_a_datanet_declares_its_form(tmp_path):
    """``datanet_forms``: a datanet that declares ``table`` (or ``code``) is judged for
    degenerate content only, whatever its lines look like; the same text elsewhere is judged
    as prose. (A strict word-order threshold makes the prose reason fire here.)"""
    recs = [(C, contribution("e1", "c1", "alice", "tables-geo", HONEST, 1)),
            (C, contribution("e2", "c2", "bob", "notes", MELVILLE, 5))]
    core, out = _run(tmp_path, recs, quality_min_ordered=0.99, datanet_forms={"tables-*": "table"})
    assert core.contribs["c2"].status == "spam" and "scrambled" in _reasons(out, "c2")
    assert core.contribs["c1"].status == "pending" and not _reasons(out, "c1")
