"""Deterministic corpora of REAL text found on this (Debian) machine.

Used to evaluate the spam/quality detector on text that no generator wrote: package
descriptions, translated AppStream descriptions and man pages, source code, delimited
data files, debtags annotations and licence texts. Nothing is downloaded and nothing is
cached on disk; every reader tolerates its source being absent and then yields nothing
(``sources_missing()`` says which sources gave nothing on this machine).

``corpus(per_group, seed)`` groups the candidates by ``(kind, lang)``, sorts each group
by id, drops exact duplicate texts (the first id in sorted order wins), and keeps at most
``per_group`` of each group with ``random.Random(seed).sample``. ``split`` cuts a corpus
into calibration and held-out halves by a hash of the item id.

    python -m poa.realdata            # counts per (kind, lang)
"""
from __future__ import annotations

import glob
import gzip
import hashlib
import html
import os
import random
import re
import subprocess
import sys
import sysconfig
import time
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

KINDS = ("prose", "code", "table", "labels", "legal")

MAX_CHARS = 20_000
CODE_LINES = 120
CODE_MIN_LINES = 30
TABLE_ROWS = 25
TABLE_MIN_ROWS = 5
TABLE_MAX_CHUNKS = 40
TABLE_MAX_BYTES = 20 * 1024 * 1024
SCRIPT_MAX_BYTES = 200 * 1024
DESC_MIN_WORDS = 30
MAN_MIN_WORDS = 40
CHUNK_WORDS = 150
LICENSE_MAX_CHUNKS = 30
LEGAL_MIN_WORDS = 40

APT_LISTS = "/var/lib/apt/lists"
DPKG_STATUS = ("/var/lib/dpkg/status", "/var/lib/dpkg/available")
MAN_ROOT = "/usr/share/man"
VENV_SITE = Path(__file__).resolve().parent.parent / ".venv" / "lib"


@dataclass(frozen=True)
class Item:
    id: str
    kind: str
    lang: str
    text: str
    source: str


# --------------------------------------------------------------------------- helpers

_CJK = re.compile(r"[\u3000-\u30ff\uff00-\uffdc\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_EN_STOP = frozenset(
    "the of and to that with are this be by for which from will when it not or an can".split()
)


def _clean(text: str) -> str:
    """Valid UTF-8, no NULs, at most MAX_CHARS characters."""
    text = text.replace("\x00", "")
    text = text.encode("utf-8", "replace").decode("utf-8", "replace")  # lone surrogates
    return text[:MAX_CHARS]


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _words(text: str) -> int:
    """Whitespace words; CJK scripts count one word per two characters."""
    return max(len(text.split()), len(_CJK.findall(text)) // 2)


def _english_ratio(text: str) -> float:
    toks = re.findall(r"[a-z]+", text.lower())
    if not toks:
        return 0.0
    return sum(t in _EN_STOP for t in toks) / max(len(text.split()), 1)


def _looks_untranslated(text: str, lang: str) -> bool:
    """A chunk of a non-English page that is really English (half-translated pages)."""
    return lang != "en" and _english_ratio(text) > 0.08


def _read_bytes(path: str, limit: int | None = None) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read() if limit is None else fh.read(limit)
    except OSError:
        return None


def _first_lines(text: str, n: int) -> tuple[str, int]:
    lines = text.splitlines()
    return "\n".join(lines[:n]), len(lines)


def _cut_words(text: str, start: int, n: int) -> tuple[str, int]:
    """The slice of ``text`` holding words[start:start+n], keeping line breaks; returns
    (slice, number of words in it)."""
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    part = spans[start:start + n]
    if not part:
        return "", 0
    return text[part[0][0]:part[-1][1]], len(part)


def _lang_of(locale: str) -> str | None:
    """ISO 639-1 code of a locale name (pt_BR -> pt, sr@latin -> sr), else None."""
    m = re.fullmatch(r"([a-z]{2})(?:_[A-Z]{2})?(?:@[a-z]+)?(?:\.[A-Za-z0-9-]+)?", locale)
    return m.group(1) if m else None


# --------------------------------------------------------------- Debian control files

def _stanzas(text: str) -> Iterator[dict[str, str]]:
    """RFC822 stanzas; continuation lines are kept (with their leading space) after a
    newline in the field value."""
    fields: dict[str, str] = {}
    key = None
    for line in text.split("\n"):
        if not line.strip():
            if fields:
                yield fields
            fields, key = {}, None
        elif line[0] in " \t":
            if key is not None:
                fields[key] += "\n" + line
        else:
            key, _, val = line.partition(":")
            fields[key] = val.strip()
    if fields:
        yield fields


def _packages_files() -> list[str]:
    return sorted(glob.glob(os.path.join(APT_LISTS, "*_Packages.lz4")))


def _read_packages(path: str) -> str:
    try:
        out = subprocess.run(["lz4", "-dc", path], capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return _decode(out.stdout)


def _description(raw: str) -> tuple[str, str]:
    """(summary, long body) of a Description field."""
    first, _, rest = raw.partition("\n")
    body = []
    for line in rest.split("\n"):
        line = line[1:] if line.startswith(" ") else line
        body.append("" if line.strip() == "." else line.rstrip())
    return first.strip(), "\n".join(body).strip()


def _control_items(paths: Iterable[tuple[str, str]]) -> tuple[list[Item], list[Item]]:
    """(description items, debtags items) from (source name, text) control files."""
    descs: list[Item] = []
    labels: list[Item] = []
    seen_desc: set[str] = set()
    seen_tag: set[str] = set()
    for src, text in paths:
        for st in _stanzas(text):
            pkg = st.get("Package")
            if not pkg:
                continue
            raw = st.get("Description")
            if raw and pkg not in seen_desc:
                summary, body = _description(raw)
                if body and _words(summary + " " + body) >= DESC_MIN_WORDS:
                    seen_desc.add(pkg)
                    descs.append(Item(f"prose-en:debian:{pkg}", "prose", "en",
                                      _clean(f"{summary}\n\n{body}"), f"{src}:{pkg}"))
            tag = st.get("Tag")
            if tag and pkg not in seen_tag:
                tags = " ".join(part.strip() for part in tag.split("\n")).strip()
                if len([t for t in tags.split(",") if t.strip()]) >= 2:
                    seen_tag.add(pkg)
                    labels.append(Item(f"labels-en:debtags:{pkg}", "labels", "en",
                                       _clean(f"{pkg}: {tags}"), f"Packages:{pkg}"))
    return descs, labels


def _debian_sources() -> Iterator[tuple[str, str]]:
    for path in _packages_files():
        yield path, _read_packages(path)
    for path in DPKG_STATUS:
        data = _read_bytes(path)
        if data:
            yield path, _decode(data)


def _dedupe_descriptions(items: list[Item]) -> list[Item]:
    """-dev/-doc variants repeat the long body under another summary: keep the first
    package (sorted by name) for each distinct body."""
    out, seen = [], set()
    for it in sorted(items, key=lambda i: i.id):
        body = it.text.partition("\n\n")[2]
        if body in seen:
            continue
        seen.add(body)
        out.append(it)
    return out


# ------------------------------------------------------------------------- AppStream

_YAML_ESC = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)")
_YAML_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "0": "", "\\": "\\", '"': '"', "/": "/",
                " ": " ", "N": "\u0085", "_": "\u00a0", "L": "\u2028", "P": "\u2029",
                "a": "", "b": "", "e": "", "f": "", "v": ""}


def _yaml_unescape(s: str) -> str:
    def sub(m: re.Match) -> str:
        e = m.group(1)
        if len(e) > 1:
            return chr(int(e[1:], 16)) if int(e[1:], 16) < 0x110000 else ""
        return _YAML_SIMPLE.get(e, e)
    return _YAML_ESC.sub(sub, s)


def _yaml_value(head: str, cont: list[str]) -> str:
    """The value of one ``  key: head`` entry of a DEP-11 mapping with its continuation
    lines. Whitespace is not significant afterwards (the value is HTML)."""
    head = head.strip()
    rest = [c.strip() for c in cont]
    if head[:1] in (">", "|"):
        return "\n".join(rest)
    if head.startswith('"'):
        joined = " ".join([head] + rest).strip()
        if joined.endswith('"'):
            joined = joined[:-1]
        return _yaml_unescape(joined[1:])
    if head.startswith("'"):
        joined = " ".join([head] + rest).strip()
        return joined[1:-1].replace("''", "'") if joined.endswith("'") else joined[1:]
    return " ".join([head] + rest)


def _html_text(s: str) -> str:
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r"(?i)<li[^>]*>", "\n- ", s)
    s = re.sub(r"(?i)</(p|ul|ol)\s*>|<(p|ul|ol)[^>]*>|<br\s*/?>", "\n\n", s)
    s = re.sub(r"<[^>]+>", "", s)
    s = html.unescape(s)
    s = "\n".join(line.strip() for line in s.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", s).strip()


def _dep11_docs(path: str) -> Iterator[list[str]]:
    try:
        fh = gzip.open(path, "rt", encoding="utf-8", errors="replace")
    except OSError:
        return
    with fh:
        doc: list[str] = []
        try:
            for line in fh:
                if line.startswith("---"):
                    if doc:
                        yield doc
                    doc = []
                else:
                    doc.append(line.rstrip("\n"))
        except (OSError, EOFError):
            pass
        if doc:
            yield doc


def _dep11_items() -> list[Item]:
    items: list[Item] = []
    for path in sorted(glob.glob(os.path.join(APT_LISTS, "*Components-*.yml.gz"))):
        for doc in _dep11_docs(path):
            cid = pkg = None
            block: list[str] | None = None
            blocks: list[list[str]] = []
            for line in doc:
                if line.startswith("ID:"):
                    cid = line[3:].strip()
                elif line.startswith("Package:"):
                    pkg = line[8:].strip()
                if block is not None:
                    if not line or line[0] == " ":
                        block.append(line)
                        continue
                    blocks.append(block)
                    block = None
                if line.rstrip() == "Description:":
                    block = []
            if block is not None:
                blocks.append(block)
            if not cid or not blocks:
                continue
            entries: list[tuple[str, str, list[str]]] = []
            for line in blocks[0]:
                m = re.match(r"^  ([A-Za-z_@.-]+):(?: (.*))?$", line)
                if m:
                    entries.append((m.group(1), m.group(2) or "", []))
                elif entries:
                    entries[-1][2].append(line)
            for locale, head, cont in entries:
                lang = "en" if locale == "C" else _lang_of(locale)
                if lang is None or (lang == "en" and locale != "C"):
                    continue  # "C" is the English original; en_GB etc. repeat it
                text = _html_text(_yaml_value(head, cont))
                if _words(text) < DESC_MIN_WORDS or _looks_untranslated(text, lang):
                    continue
                items.append(Item(f"prose-{lang}:dep11:{locale}:{cid}", "prose", lang,
                                  _clean(text), f"{path}:{pkg or cid}:{locale}"))
    return items


# ------------------------------------------------------------------------- man pages

_GLYPHS = {
    "ss": "ß", "oa": "å", "oA": "Å", "ae": "æ", "AE": "Æ", "o/": "ø", "O/": "Ø",
    "em": "—", "en": "–", "hy": "-", "bu": "•", "aq": "'", "dq": '"', "lq": "“",
    "rq": "”", "oq": "‘", "cq": "’", "Fo": "«", "Fc": "»", "fo": "‹", "fc": "›",
    "co": "©", "rg": "®", "tm": "™", "de": "°", "mu": "×", "di": "÷", "+-": "±",
    "<=": "≤", ">=": "≥", "!=": "≠", "->": "→", "<-": "←", "ti": "~", "ha": "^",
    "rs": "\\", "sl": "/", "ba": "|", "at": "@", "sh": "#", "Do": "$", "Eu": "€",
    "eu": "€", "Po": "£", "Ye": "¥", "mc": "µ", "ps": "¶", "sc": "§", "dg": "†",
    "ua": "↑", "da": "↓", "pl": "+", "mi": "−", "eq": "=", "ga": "`", "aa": "´",
    "bq": "„", "Bq": "„", "ct": "¢", "la": "⟨", "ra": "⟩", "lB": "[", "rB": "]",
    "lC": "{", "rC": "}", "R": "®", "Tm": "™", "rq ": "”",
}
_ACCENTS = {":": "\u0308", "'": "\u0301", "`": "\u0300", "^": "\u0302", "~": "\u0303",
            ",": "\u0327", "v": "\u030c", "o": "\u030a"}


def _glyph(name: str) -> str:
    if name in _GLYPHS:
        return _GLYPHS[name]
    m = re.fullmatch(r"u([0-9A-Fa-f]{4,6})((?:_[0-9A-Fa-f]{4,6})*)", name)
    if m:
        try:
            return unicodedata.normalize(
                "NFC", "".join(chr(int(h, 16)) for h in name[1:].split("_")))
        except ValueError:
            return ""
    if len(name) == 2 and name[0] in _ACCENTS and name[1].isalpha():
        return unicodedata.normalize("NFC", name[1] + _ACCENTS[name[0]])
    if len(name) == 2 and name[1] in _ACCENTS and name[0].isalpha():
        return unicodedata.normalize("NFC", name[0] + _ACCENTS[name[1]])
    return ""


_ROFF_ESC = re.compile(
    r"""\\(?:
        "(?P<comment>.*)$                              # comment to end of line
      | [fF](?:\[[^\]]*\]|\(..|.)                      # font change
      | \((?P<g2>..)                                   # \(xx glyph
      | \[(?P<gb>[^\]]*)\]                             # \[name] glyph
      | \*(?:\[(?P<sb>[^\]]*)\]|\((?P<s2>..)|(?P<s1>.))  # string
      | [sS][+-]?(?:\d\d?|\(\d\d|\[\d+\]|'\d+')        # size
      | [hvwlLDoXbxNZHRSVCAB]'[^']*'                   # motions, boxes, \N'..'
      | [nkgmMOYV](?:\[[^\]]*\]|\(..|.)                # registers, colours
      | (?P<lit>[-e\\ ~0'`.|^&%:cdutpaz{}!?rE])        # one-character escapes
    )""",
    re.VERBOSE,
)
_ESC_LIT = {"-": "-", "e": "\\", "\\": "\\", " ": " ", "~": " ", "0": " ", "'": "´",
            "`": "`", ".": ".", "E": "\\"}
_STRINGS = {"lq": "“", "rq": "”", "R": "®", "Tm": "™", "Aq": "'", "aq": "'"}


def _unroff(text: str) -> str:
    def sub(m: re.Match) -> str:
        if m.group("comment") is not None:
            return ""
        if m.group("g2") is not None:
            return _glyph(m.group("g2"))
        if m.group("gb") is not None:
            return _glyph(m.group("gb"))
        s = m.group("sb") or m.group("s2") or m.group("s1")
        if s is not None:
            return _STRINGS.get(s, "")
        lit = m.group("lit")
        if lit is not None:
            return _ESC_LIT.get(lit, "")
        return ""
    return _ROFF_ESC.sub(sub, text)


_PARA_MACROS = {"PP", "P", "LP", "TP", "IP", "HP", "SH", "SS", "Sh", "Ss", "Pp", "sp",
                "RS", "RE", "TQ", "Bl", "El", "It", "Bd", "Ed", "in", "ti", "br"}
_FONT_JOIN = {"BR", "RB", "IR", "RI", "BI", "IB"}
_FONT_SPACE = {"B", "I", "SM", "SB"}


def _man_paragraphs(src: str) -> list[tuple[int, str]]:
    """(section index, paragraph text) of a roff page; section 0 is the first .SH."""
    paras: list[tuple[int, str]] = []
    cur: list[str] = []
    section = -1
    skip_until: str | None = None

    def flush() -> None:
        if cur:
            text = ""
            for part in cur:
                part = re.sub(r"\s+", " ", part).strip()
                if not part:
                    continue
                if text and not (_CJK.match(part[0]) and _CJK.match(text[-1])):
                    text += " "
                text += part
            if text:
                paras.append((section, text))
            cur.clear()

    for line in src.split("\n"):
        if skip_until is not None:
            if (skip_until in line) if skip_until == "\\}" else line.startswith(skip_until):
                skip_until = None
            continue
        if line.startswith((".", "'")):
            m = re.match(r"^[.']\s*(\S+)\s*(.*)$", line)
            if not m:
                continue
            name, arg = m.group(1), m.group(2)
            if name in ("if", "ie", "el") and "\\{" in arg:
                skip_until = "\\}"  # conditional block (DocBook bullets, indents)
            elif name in ("de", "de1", "am", "ig"):
                skip_until = ".."
            elif name in ("TS",):
                skip_until = ".TE"
            elif name in ("nf", "EX"):
                flush()
                skip_until = ".fi" if name == "nf" else ".EE"
            elif name in _PARA_MACROS:
                flush()
                if name in ("SH", "Sh"):
                    section += 1
                elif name == "IP" and arg.startswith(("\\(bu", "\\[bu]", "\\(em", "-", "*")):
                    cur.append("•")
            elif name in _FONT_SPACE and arg:
                cur.append(_unroff(" ".join(a.strip('"') for a in
                                            re.findall(r'"[^"]*"|\S+', arg))))
            elif name in _FONT_JOIN and arg:
                cur.append(_unroff("".join(a.strip('"') for a in
                                           re.findall(r'"[^"]*"|\S+', arg))))
            continue
        if not line.strip():
            flush()
            continue
        cur.append(_unroff(line))
    flush()
    return paras


def _sentence_cut(text: str, max_words: int, min_words: int) -> str:
    if _words(text) <= max_words * 1.2:
        return text
    head, n = _cut_words(text, 0, max_words)
    ends = [m.end() for m in re.finditer(r"[.!?。！？](?=\s|$)", head)]
    for end in reversed(ends):
        if _words(head[:end]) >= min_words:
            return head[:end]
    return head


def _man_chunk(src: str, lang: str) -> str | None:
    paras = _man_paragraphs(src)
    n_sections = max((s for s, _ in paras), default=-1) + 1
    first = 2 if n_sections >= 3 else (1 if n_sections >= 2 else 0)
    buf: list[str] = []
    buf_section = None
    for section, text in paras:
        if section < first:
            continue
        if section != buf_section:
            buf, buf_section = [], section
        if _looks_untranslated(text, lang) or text.count("\ufffd") > 0:
            buf = []
            continue
        buf.append(text)
        chunk = "\n\n".join(buf)
        if _words(chunk) >= MAN_MIN_WORDS:
            return _sentence_cut(chunk, CHUNK_WORDS, MAN_MIN_WORDS)
    return None


def _man_dirs() -> list[tuple[str, str]]:
    out = []
    try:
        names = sorted(os.listdir(MAN_ROOT))
    except OSError:
        return out
    for name in names:
        lang = _lang_of(name)
        if lang and lang != "en" and os.path.isdir(os.path.join(MAN_ROOT, name)):
            out.append((name, lang))
    return out


def _man_items() -> list[Item]:
    items: list[Item] = []
    seen_real: set[str] = set()
    for dirname, lang in _man_dirs():
        for path in sorted(glob.glob(os.path.join(MAN_ROOT, dirname, "man*", "*.gz"))):
            real = os.path.realpath(path)
            if real in seen_real:
                continue
            seen_real.add(real)
            try:
                with gzip.open(path, "rb") as fh:
                    data = fh.read(2_000_000)
            except (OSError, EOFError, gzip.BadGzipFile):
                continue
            try:
                src = data.decode("utf-8")
            except UnicodeDecodeError:
                src = _decode(data)
            chunk = _man_chunk(src, lang)
            if chunk:
                rel = os.path.relpath(path, MAN_ROOT)
                items.append(Item(f"prose-{lang}:man:{rel}", "prose", lang,
                                  _clean(chunk), path))
    return items


# ------------------------------------------------------------------------------ code

_PY_PACKAGES = ("asyncio", "collections", "concurrent/futures", "ctypes", "curses",
                "dbm", "email", "email/mime", "html", "http", "importlib",
                "importlib/metadata", "importlib/resources", "json", "logging",
                "multiprocessing", "multiprocessing/dummy", "re", "sqlite3", "tomllib",
                "unittest", "urllib", "venv", "wsgiref", "xml/dom", "xml/etree",
                "xml/parsers", "xml/sax", "xmlrpc", "zoneinfo", "idlelib")


def _code_item(kind_lang: str, tag: str, rel: str, path: str) -> Item | None:
    data = _read_bytes(path, 400_000)
    if data is None or b"\x00" in data[:4096]:
        return None
    text, n = _first_lines(_decode(data), CODE_LINES)
    if n < CODE_MIN_LINES:
        return None
    lang = kind_lang
    return Item(f"code-{lang}:{tag}:{rel}", "code", lang, _clean(text), path)


def _py_items() -> list[Item]:
    stdlib = sysconfig.get_paths().get("stdlib")
    if not stdlib or not os.path.isdir(stdlib):
        return []
    items = []
    paths = sorted(glob.glob(os.path.join(stdlib, "*.py")))
    for pkg in _PY_PACKAGES:
        paths += sorted(glob.glob(os.path.join(stdlib, pkg, "*.py")))
    for path in paths:
        rel = os.path.relpath(path, stdlib)
        base = os.path.basename(path)
        parts = rel.split(os.sep)
        if base.startswith("test_") or any(p in ("test", "tests", "idle_test") for p in parts):
            continue
        it = _code_item("py", "stdlib", rel, path)
        if it:
            items.append(it)
    return items


def _c_items() -> list[Item]:
    items = []
    for pattern in ("/usr/include/*.h", "/usr/include/linux/*.h"):
        for path in sorted(glob.glob(pattern)):
            it = _code_item("c", "include", os.path.relpath(path, "/usr/include"), path)
            if it:
                items.append(it)
    return items


_SHEBANG = re.compile(rb"^#!\s*/(?:usr/)?bin/(?:env\s+)?(?:ba|da)?sh\b")
_SH_GLOBS = ("/usr/bin/*", "/usr/sbin/*", "/etc/init.d/*", "/usr/share/debconf/*",
             "/etc/cron.*/*", "/etc/profile.d/*", "/usr/lib/dpkg/*",
             "/var/lib/dpkg/info/*.preinst", "/var/lib/dpkg/info/*.postinst",
             "/var/lib/dpkg/info/*.prerm", "/var/lib/dpkg/info/*.postrm",
             "/var/lib/dpkg/info/*.config")


def _sh_items(extra: Iterable[str]) -> list[Item]:
    items = []
    seen: set[str] = set()
    paths = []
    for pattern in _SH_GLOBS:
        paths += sorted(glob.glob(pattern))
    paths += sorted(extra)
    for path in paths:
        try:
            real = os.path.realpath(path)
            st = os.stat(real)
        except OSError:
            continue
        if real in seen or not os.path.isfile(real) or st.st_size > SCRIPT_MAX_BYTES:
            continue
        seen.add(real)
        head = _read_bytes(real, 64)
        if not head or not _SHEBANG.match(head):
            continue
        it = _code_item("sh", "script", _id_path(path), path)
        if it:
            items.append(it)
    return items


# ---------------------------------------------------------------------------- tables

def _walk(roots: Iterable[str], suffixes: tuple[str, ...]) -> list[str]:
    hits = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.endswith(suffixes):
                    hits.append(os.path.join(dirpath, name))
    return sorted(hits)


def _table_chunks(path: str, lang: str, drop_comments: bool) -> list[Item]:
    try:
        if os.path.getsize(path) > TABLE_MAX_BYTES:
            return []
    except OSError:
        return []
    data = _read_bytes(path)
    if not data or b"\x00" in data[:4096]:
        return []
    lines = [ln for ln in _decode(data).splitlines() if ln.strip()]
    if drop_comments:
        lines = [ln for ln in lines if not ln.lstrip().startswith("#")]
    if len(lines) < 1 + TABLE_MIN_ROWS:
        return []
    delim = "," if lang == "csv" else "\t"
    header, rows = lines[0], lines[1:]
    if delim not in header and delim not in rows[0]:
        return []
    starts = list(range(0, len(rows), TABLE_ROWS))
    starts = [s for s in starts if len(rows) - s >= TABLE_MIN_ROWS]
    if len(starts) > TABLE_MAX_CHUNKS:  # spread over the file, evenly
        step = len(starts) / TABLE_MAX_CHUNKS
        starts = [starts[int(i * step)] for i in range(TABLE_MAX_CHUNKS)]
    out = []
    for s in starts:
        text = "\n".join([header] + rows[s:s + TABLE_ROWS])
        out.append(Item(f"table-{lang}:{_id_path(path)}:{s}", "table", lang,
                        _clean(text), path))
    return out


def _id_path(path: str) -> str:
    """The path as it appears in an item id: relative to its site-packages for files of this
    checkout's virtual environment (an id, and with it the calibration/held-out split and the
    corpus order, must not depend on where the repository was cloned), else without the
    leading slash."""
    parts = Path(path).parts
    if "site-packages" in parts and Path(path).is_relative_to(VENV_SITE):
        return "/".join(parts[parts.index("site-packages"):])
    return path.lstrip("/")


def _table_items(found: list[str]) -> list[Item]:
    items: list[Item] = []
    paths: dict[str, tuple[str, bool]] = {}
    for p in sorted(glob.glob("/usr/share/distro-info/*.csv")):
        paths[p] = ("csv", False)
    for p in sorted(glob.glob("/usr/share/zoneinfo/*.tab")):
        paths[p] = ("tsv", True)
    for p in sorted(glob.glob("/usr/share/package-lists/*.tsv")):
        paths[p] = ("tsv", False)
    for p in sorted(glob.glob(str(VENV_SITE / "python3*" / "site-packages" / "numpy"
                                  / "**" / "tests" / "data" / "*.csv"), recursive=True)):
        paths[p] = ("csv", True)
    for p in found:
        paths.setdefault(p, ("csv" if p.endswith(".csv") else "tsv", False))
    seen_real: set[str] = set()
    for p in sorted(paths):
        real = os.path.realpath(p)
        if real in seen_real:
            continue
        seen_real.add(real)
        lang, comments = paths[p]
        items += _table_chunks(p, lang, comments)
    return items


# ----------------------------------------------------------------------------- legal

def _license_items() -> list[Item]:
    items = []
    seen_real: set[str] = set()
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        real = os.path.realpath(path)
        if real in seen_real or not os.path.isfile(real):
            continue
        seen_real.add(real)
        data = _read_bytes(real)
        if not data:
            continue
        text = _decode(data)
        name = os.path.basename(path)
        for i in range(LICENSE_MAX_CHUNKS):
            chunk, n = _cut_words(text, i * CHUNK_WORDS, CHUNK_WORDS)
            if n < LEGAL_MIN_WORDS:
                break
            items.append(Item(f"legal-en:common-licenses:{name}:{i}", "legal", "en",
                              _clean(chunk), path))
    return items


def _copyright_items() -> list[Item]:
    items = []
    for path in sorted(glob.glob("/usr/share/doc/*/copyright")):
        data = _read_bytes(path, 1_000_000)
        if not data:
            continue
        text = _decode(data)
        m = re.search(r"(?m)^License:", text)
        if m:
            text = text[m.start():]
        chunk, n = _cut_words(text, 0, CHUNK_WORDS)
        if n < LEGAL_MIN_WORDS:
            continue
        pkg = path.split("/")[-2]
        items.append(Item(f"legal-en:copyright:{pkg}", "legal", "en", _clean(chunk), path))
    return items


# ---------------------------------------------------------------------------- corpus

def _collect() -> tuple[list[Item], dict[str, int]]:
    """Every candidate item, and how many each source gave."""
    counts: dict[str, int] = {}
    out: list[Item] = []

    def add(name: str, items: list[Item]) -> None:
        counts[name] = len(items)
        out.extend(items)

    packages_sources = list(_debian_sources())
    pk_desc, pk_tags = _control_items(s for s in packages_sources if s[0].endswith(".lz4"))
    st_desc, st_tags = _control_items(s for s in packages_sources if not s[0].endswith(".lz4"))
    desc_pk = _dedupe_descriptions(pk_desc)
    known = {i.id for i in desc_pk}
    desc_st = _dedupe_descriptions([i for i in st_desc if i.id not in known])
    add("Debian long descriptions in /var/lib/apt/lists/*_Packages.lz4", desc_pk)
    add("Debian long descriptions in /var/lib/dpkg/status", desc_st)
    tag_ids = {i.id for i in pk_tags}
    add("debtags (Tag:) in Packages lists / dpkg status",
        pk_tags + [i for i in st_tags if i.id not in tag_ids])
    add("AppStream (DEP-11) descriptions in /var/lib/apt/lists/*Components-*.yml.gz",
        _dep11_items())
    add("translated man pages under /usr/share/man/<lang>/", _man_items())
    add("Python stdlib sources", _py_items())
    add("C headers in /usr/include", _c_items())
    found = _walk(["/usr/share", "/usr/lib"], (".csv", ".tsv", ".sh"))
    site = sorted(glob.glob(str(VENV_SITE / "python3*" / "site-packages")))
    found_site = _walk(site, (".csv", ".tsv"))
    add("shell scripts (/usr/bin, /usr/sbin, /etc/init.d, dpkg maintainer scripts, *.sh)",
        _sh_items(p for p in found if p.endswith(".sh")))
    add("delimited files (distro-info, zoneinfo, package-lists, *.csv/*.tsv)",
        _table_items([p for p in found + found_site if not p.endswith(".sh")]))
    add("/usr/share/common-licenses", _license_items())
    add("/usr/share/doc/*/copyright", _copyright_items())
    return out, counts


def corpus(per_group: int = 250, seed: int = 0) -> list[Item]:
    """Items grouped by (kind, lang); at most ``per_group`` per group, chosen
    deterministically (sorted candidates, then ``random.Random(seed).sample``);
    sorted by id in the result."""
    return _select(_collect()[0], per_group, seed)


def _select(items: list[Item], per_group: int, seed: int) -> list[Item]:
    by_id: dict[str, Item] = {}
    for it in sorted(items, key=lambda i: i.id):
        by_id.setdefault(it.id, it)
    groups: dict[tuple[str, str], list[Item]] = defaultdict(list)
    seen_text: set[str] = set()
    for it in by_id.values():  # sorted by id
        if not it.text.strip() or it.text in seen_text:
            continue
        seen_text.add(it.text)
        groups[(it.kind, it.lang)].append(it)
    chosen: list[Item] = []
    for key in sorted(groups):
        cands = groups[key]
        if len(cands) > per_group:
            cands = random.Random(seed).sample(cands, per_group)
        chosen.extend(cands)
    return sorted(chosen, key=lambda i: i.id)


def _bucket(item_id: str) -> float:
    h = hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0 ** 64


def split(items: Iterable[Item], calibration_fraction: float = 0.5
          ) -> tuple[list[Item], list[Item]]:
    """(calibration, held-out) by blake2b of ``item.id``: deterministic and independent
    of the order of ``items``; each part is sorted by id."""
    cal, held = [], []
    for it in sorted(items, key=lambda i: i.id):
        (cal if _bucket(it.id) < calibration_fraction else held).append(it)
    return cal, held


def sources_missing() -> list[str]:
    """Human-readable list of the sources that gave nothing on this machine."""
    _, counts = _collect()
    missing = [name for name, n in counts.items() if n == 0]
    if not _packages_files():
        missing.insert(0, "/var/lib/apt/lists/*_Packages.lz4 (no apt lists)")
    return missing


def counts_table(items: Iterable[Item]) -> str:
    c = Counter((i.kind, i.lang) for i in items)
    rows = [f"{'kind':<8}{'lang':<6}{'items':>6}"]
    rows += [f"{k:<8}{lang:<6}{n:>6}" for (k, lang), n in sorted(c.items())]
    rows.append(f"{'total':<14}{sum(c.values()):>6}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    items, counts = _collect()
    sel = _select(items, 250, 0)
    t1 = time.perf_counter()
    print(counts_table(sel))
    print(f"\ncorpus(): {len(sel)} items in {t1 - t0:.1f} s")
    print("\ncandidates per source:")
    for name, n in counts.items():
        print(f"  {n:>7}  {name}")
    missing = [name for name, n in counts.items() if n == 0]
    print("\nsources not found on this machine: " + ("; ".join(missing) if missing else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
