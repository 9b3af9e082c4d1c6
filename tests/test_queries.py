"""docs/queries.md: every example query runs on a seeded store and returns rows."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from support.seeded_store import seeded_sink

DOC = Path(__file__).resolve().parent.parent / "docs" / "queries.md"
# "### Title", prose, then one ```sql block
_QUERY = re.compile(r"^### (?P<title>.+?)\n(?P<prose>.*?)```sql\n(?P<sql>.*?)```", re.M | re.S)


def queries() -> list[tuple[str, str]]:
    return [(m["title"].strip(), m["sql"].strip()) for m in _QUERY.finditer(DOC.read_text(encoding="utf-8"))]


QUERIES = queries()


@pytest.fixture(scope="module")
def store(chdb_path):
    sink = seeded_sink(chdb_path)
    sink.use_database()  # the doc's table names are unqualified
    yield sink
    sink.command("USE default")  # the engine is shared by every test of the process
    sink.close()


def test_the_doc_has_titled_queries():
    assert len(QUERIES) >= 10
    titles = [t for t, _ in QUERIES]
    assert len(set(titles)) == len(titles)
    assert DOC.read_text(encoding="utf-8").count("```sql") == len(QUERIES), "every sql block has a ### title"
    for title, sql in QUERIES:
        for m in re.finditer(r"\b(?:FROM|JOIN)\s+(contributions|models)\b(\s+FINAL)?", sql):
            assert m.group(2), f"{title}: read {m.group(1)} with FINAL"


@pytest.mark.parametrize("title, sql", QUERIES, ids=[t for t, _ in QUERIES])
def test_query_returns_rows(store, title, sql):
    cols, rows = store.query(sql)
    assert cols and rows, f"{title}: no rows"


def test_the_checks_in_the_doc_hold(store):
    """The audit queries state facts about the ledger: check them, not only that they run."""
    by_title = dict(QUERIES)
    _, rows = store.query(by_title["Every usage fee is split exactly"])
    assert rows[0][0] > 0 and rows[0][1] == 0
    cols, rows = store.query(by_title["Fee-funded vs emission-funded rewards per epoch"])
    assert all(r[cols.index("ledger_agrees")] for r in rows)
