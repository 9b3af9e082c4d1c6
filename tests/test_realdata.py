"""poa.realdata: real corpora from this Debian machine, deterministic selection and split."""
from __future__ import annotations

import os
import random
from collections import Counter

import pytest

from poa_stream import realdata
from poa_stream.realdata import KINDS, Item, corpus, split

debian_only = pytest.mark.skipif(not os.path.exists("/etc/debian_version"),
                                 reason="needs the Debian sources of this machine")


@pytest.fixture(scope="module")
def candidates():
    return realdata._collect()[0]


@pytest.fixture(scope="module")
def items():
    return corpus()


def test_corpus_is_deterministic(items):
    again = corpus()
    assert again == items


def test_ids_do_not_depend_on_where_the_repository_was_cloned(candidates):
    """The split hashes ids and the corpus is sorted by them: a checkout path inside an id
    moved items between the calibration and held-out halves from one clone to the next."""
    root = str(realdata.VENV_SITE.parent.parent).lstrip("/")
    venv = [c.id for c in candidates if "site-packages" in c.id]
    assert venv and all("site-packages/" in i and root not in i for i in venv), venv[:3]
    assert not [c.id for c in candidates if root in c.id]


def test_items_are_well_formed(items):
    ids = [i.id for i in items]
    assert len(ids) == len(set(ids))
    assert ids == sorted(ids)
    for it in items:
        assert it.kind in KINDS
        assert it.text.strip() and len(it.text) <= realdata.MAX_CHARS
        assert "\x00" not in it.text
        it.text.encode("utf-8")  # no lone surrogates
        assert it.id.startswith(f"{it.kind}-{it.lang}:")
        assert it.source
    assert len({i.text for i in items}) == len(items)  # exact duplicates dropped


@debian_only
def test_every_kind_present(items):
    per_kind = Counter(i.kind for i in items)
    for kind in KINDS:
        assert per_kind[kind] >= 50, (kind, per_kind)
    langs = {(i.kind, i.lang) for i in items}
    for key in [("prose", "en"), ("code", "py"), ("code", "c"), ("code", "sh"),
                ("table", "csv"), ("table", "tsv"), ("labels", "en"), ("legal", "en")]:
        assert key in langs


@debian_only
def test_prose_languages(items):
    prose = Counter(i.lang for i in items if i.kind == "prose")
    others = [lang for lang, n in prose.items() if lang != "en" and n >= 30]
    assert len(others) >= 4, prose
    assert all(len(lang) == 2 for lang in prose)


def test_per_group_is_respected(candidates, monkeypatch):
    monkeypatch.setattr(realdata, "_collect", lambda: (candidates, {}))
    small = corpus(per_group=20, seed=3)
    groups = Counter((i.kind, i.lang) for i in small)
    assert groups and max(groups.values()) <= 20
    full = Counter((i.kind, i.lang) for i in candidates)
    for key, n in full.items():
        if n >= 100:  # large groups fill up exactly (few exact duplicates there)
            assert groups[key] == 20, key
    assert corpus(per_group=20, seed=3) == small
    other = corpus(per_group=20, seed=4)
    assert {i.id for i in other} != {i.id for i in small}


def test_split(items):
    cal, held = split(items)
    cal_ids, held_ids = {i.id for i in cal}, {i.id for i in held}
    assert not cal_ids & held_ids
    assert cal_ids | held_ids == {i.id for i in items}
    assert 0.4 <= len(cal) / len(items) <= 0.6
    shuffled = list(items)
    random.Random(7).shuffle(shuffled)
    assert split(shuffled) == (cal, held)
    # membership depends on the id only
    sub_cal, _ = split(items[::3])
    assert {i.id for i in sub_cal} == cal_ids & {i.id for i in items[::3]}


def test_split_fraction():
    fake = [Item(f"prose-en:x:{n}", "prose", "en", "t", "s") for n in range(2000)]
    cal, held = split(fake, calibration_fraction=0.2)
    assert 0.15 <= len(cal) / len(fake) <= 0.25
    assert split(fake, 0.0)[0] == [] and split(fake, 1.0)[1] == []


def test_sources_missing_is_a_list_of_strings(candidates, monkeypatch):
    monkeypatch.setattr(realdata, "_collect",
                        lambda: (candidates, {"present": 3, "absent source": 0}))
    missing = realdata.sources_missing()
    assert "absent source" in missing and "present" not in missing
    assert all(isinstance(m, str) for m in missing)


# ------------------------------------------------------------ readers, on small inputs

def test_unroff():
    line = r"\fBchage\fR \- \(:andert die \*(lqInfo\*(rq f\[u00FC]r \fIuser\fP\&. \e"
    assert realdata._unroff(line) == "chage - ändert die “Info” für user. \\"


def test_man_chunk_skips_name_synopsis_and_macros():
    src = "\n".join([
        '.\\" comment', ".TH LS 1", ".SH NAME", "ls \\- list", ".SH SYNOPSIS",
        ".B ls", "[\\fIOPTION\\fR]", ".SH BESCHREIBUNG", ".PP",
        " ".join(["Wort"] * 30) + ".", ".nf", "code example", ".fi",
        " ".join(["Satz"] * 20) + ".", ".TS", "tab\tle", ".TE"])
    chunk = realdata._man_chunk(src, "de")
    assert chunk is not None
    assert "list" not in chunk and "OPTION" not in chunk and "code example" not in chunk
    assert "tab" not in chunk and chunk.count("Wort") == 30 and chunk.count("Satz") == 20


def test_man_chunk_drops_untranslated_english():
    english = ("The command changes the number of days between password changes and "
               "the date of the last password change. This information is used by the "
               "system to determine when a user must change their password and it is "
               "kept in the shadow file for that.")
    src = "\n".join([".SH NAME", "x", ".SH SYN", "y", ".SH BESCHREIBUNG", english])
    assert realdata._man_chunk(src, "de") is None


def test_control_items():
    text = (
        "Package: b-dev\nDescription: b headers\n Long text " + "word " * 30 + "\n .\n"
        " second para\nTag: devel::library, role::devel-lib,\n implemented-in::c\n\n"
        "Package: a\nDescription: a lib\n Long text " + "word " * 30 + "\n .\n"
        " second para\nTag: role::program\n\n"
        "Package: c\nDescription: short only\nTag: a::b, c::d\n"
    )
    descs, labels = realdata._control_items([("Packages", text)])
    descs = realdata._dedupe_descriptions(descs)
    assert [d.id for d in descs] == ["prose-en:debian:a"]  # same body as b-dev
    assert descs[0].text.startswith("a lib\n\nLong text") and "\n\nsecond para" in descs[0].text
    assert sorted(lb.text for lb in labels) == [
        "b-dev: devel::library, role::devel-lib, implemented-in::c", "c: a::b, c::d"]


def test_dep11_values():
    assert realdata._yaml_value('"<p>a\\nb \\"q\\"', ['    c</p>"']) == '<p>a\nb "q" c</p>'
    assert realdata._yaml_value(">-", ["    <p>x</p>", "", "    <ul><li>y</li></ul>"]) \
        == "<p>x</p>\n\n<ul><li>y</li></ul>"
    assert realdata._html_text("<p>Hello &amp; bye</p><ul><li>one</li><li>two</li></ul>") \
        == "Hello & bye\n\n- one\n- two"


def test_tables_chunk_and_tolerate_absence(tmp_path):
    f = tmp_path / "t.tsv"
    f.write_text("# comment\n" + "h1\th2\n" + "".join(f"{n}\tx\n" for n in range(60)))
    chunks = realdata._table_chunks(str(f), "tsv", True)
    assert [c.text.count("\n") for c in chunks] == [25, 25, 10]
    assert all(c.text.startswith("h1\th2\n") for c in chunks)
    assert len({c.id for c in chunks}) == 3
    assert realdata._table_chunks(str(tmp_path / "absent.csv"), "csv", False) == []


def test_readers_tolerate_absent_sources(monkeypatch, tmp_path):
    monkeypatch.setattr(realdata, "APT_LISTS", str(tmp_path / "none"))
    monkeypatch.setattr(realdata, "MAN_ROOT", str(tmp_path / "none"))
    monkeypatch.setattr(realdata, "DPKG_STATUS", (str(tmp_path / "status"),))
    assert realdata._dep11_items() == []
    assert realdata._man_items() == []
    assert list(realdata._debian_sources()) == []
    assert realdata._walk([str(tmp_path / "none")], (".csv",)) == []
