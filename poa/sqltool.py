"""``poa sql`` with clickhouse-client conventions (the command is in poa/cli.py).

- Queries: the positional argument, ``-q/--query`` (repeatable), ``--queries-file``, or
  standard input when none is given and it is not a terminal; each text may hold several
  statements separated by ``;`` (:func:`split_statements` knows quotes and comments).
- ``--param_NAME=VALUE`` (or ``--param_NAME VALUE``) binds ``{NAME:Type}`` in every query;
  the server parses and type-checks the value (no string interpolation here).
- Output: ``--format``, else the statement's own ``FORMAT`` clause, else
  ``PrettyCompactMonoBlock`` on a terminal and ``TSV`` when piped.
- Read-only unless ``--write``: the session runs with ``readonly = 1`` (writes, DDL,
  settings changes and table functions such as ``file()``, ``url()`` or ``s3()`` fail with
  one line pointing at ``--write``).
- Errors: one line each, exit code 1 at the first failing statement (2 for usage errors).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import IO

_FORMAT_RE = re.compile(r"\bFORMAT\s+\w+\s*$", re.IGNORECASE)
_PARAM_RE = re.compile(r"^--param_([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?$", re.DOTALL)
READONLY_CODE = 164


class SqlUsageError(ValueError):
    pass


def split_statements(text: str) -> list[str]:
    """Statements of ``text`` split at ``;`` outside quotes ('', "", ``) and comments
    (``--`` to the end of the line, ``/* */``); empty statements dropped."""
    out, cur, i, n = [], [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"`":
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if text[j] == "\\" else 1
            cur.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("--", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            cur.append(text[i:j])
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            cur.append(text[i:j])
            i = j
        elif ch == ";":
            out.append("".join(cur))
            cur = []
            i += 1
        else:
            cur.append(ch)
            i += 1
    out.append("".join(cur))
    return [s.strip() for s in out if _code_of(s).strip()]


def _code_of(stmt: str) -> str:
    """The statement without comments (to tell an empty one)."""
    return re.sub(r"--[^\n]*|/\*.*?\*/", "", stmt, flags=re.DOTALL)


def parse_params(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """(``--param_NAME=VALUE`` / ``--param_NAME VALUE`` pairs, the positional queries) of
    the arguments the options did not take."""
    params, positional, i = {}, [], 0
    while i < len(args):
        m = _PARAM_RE.match(args[i])
        if not m:
            if args[i].startswith("-") and " " not in args[i].strip():
                raise SqlUsageError(f"unknown option {args[i]!r} (query parameters are --param_NAME=VALUE)")
            positional.append(args[i])
            i += 1
            continue
        if m.group(2) is not None:
            params[m.group(1)] = m.group(2)
            i += 1
        elif i + 1 < len(args):
            params[m.group(1)] = args[i + 1]
            i += 2
        else:
            raise SqlUsageError(f"{args[i]} needs a value")
    return params, positional


def collect_queries(positional: list[str], queries: list[str], queries_file: Path | None,
                    stdin: IO[str] | None) -> list[str]:
    texts = list(positional) + list(queries)
    if queries_file is not None:
        texts.append(queries_file.read_text())
    if not texts and stdin is not None and not stdin.isatty():
        texts.append(stdin.read())
    statements = [s for t in texts for s in split_statements(t)]
    if not statements:
        raise SqlUsageError("no query: pass one as an argument, with -q, --queries-file or on stdin")
    return statements


def run_queries(sink, statements: list[str], params: dict[str, str], fmt: str | None, write: bool,
                out: IO[bytes], err) -> int:
    """Run each statement, writing its output; 0, or 1 at the first failure (one line on
    ``err``, a rich console)."""
    from poa_stream.stores import first_line
    try:
        sink.use_database()
        try:  # no "280.42 million" beside a sum of micro-units in Pretty formats (a session setting)
            sink.command("SET output_format_pretty_single_large_number_tip_threshold = 0")
        except Exception:
            pass
        if not write:
            sink.make_readonly()
    except Exception as exc:
        err.print(f"[red]poa sql:[/] cannot use database {sink.database}: {first_line(exc)}")
        return 1
    for stmt in statements:
        own = _FORMAT_RE.search(_code_of(stmt).strip())
        try:
            data = sink.raw(stmt, None if own else (fmt or "TSV"), params or None)
        except Exception as exc:
            code = sink.error_code(exc)
            hint = ""
            if code == READONLY_CODE:
                hint = (" (the store is read-only here: pass --write to change it)" if not write else
                        " (the server is read-only: a running worker serves this store; stop it to write)")
            err.print(f"[red]poa sql: query failed:[/] {first_line(exc)}{hint}")
            return 1
        out.write(data)
        out.flush()
    return 0
