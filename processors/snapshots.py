"""Snapshots of the core's state beside the store: restart cost bounded by the state, not history.

A snapshot is the core's log-derived state after the event of ``seq`` (processors/core.py
:meth:`Core.snapshot_state`: the span index and corpus columns, the LSH tables, the
validator model, contributions, models, the epoch book and pools, the ids seen; never the
events buffered but not processed, which the store's inbox holds). One file each,
``snap-<seq>.poa``, in ``Settings.snapshot_path``:

    MAGIC (8 bytes) | header length (4 bytes, big endian) | header (JSON) | body (pickle)

The header holds the format version, ``seq``, the ``event_id`` logged at ``seq``, the
policy schedule's fingerprints (effective epoch, fingerprint), the open epoch, the code
fingerprint (a hash of the sources of the packages whose objects a snapshot holds:
attribution/, processors/, streams/) and the state's attribute names, the body's length
and BLAKE2b-256 checksum, and the creation time (informational). A snapshot written by
other code is never loaded (its objects may not mean the same): after an upgrade the first
start replays the whole log once, then snapshots again. A file is
written under a temporary name, flushed and fsynced, then renamed (atomic on POSIX) and
the directory fsynced: a crash (SIGKILL included) at any point leaves either the new
snapshot complete or no trace of it but a temporary file, which is ignored and removed.

Start (:func:`processors.replay.restore`): the newest snapshot that is intact (magic,
length, checksum, version), belongs to this store (its ``seq`` is logged with the same
``event_id``), to this policy schedule (same policies up to its open epoch) and to this
code (same code fingerprint and state attributes) is loaded,
then only the log after ``seq`` is replayed, and the ledger rows that tail produces must
equal the stored ones (entry ids and amounts). Any failure: a warning, that snapshot is
set aside (renamed ``*.bad``) and the previous one is tried, down to the whole log.

Trust: the body is a pickle, so a snapshot directory must be as private as the store
itself (whoever can write it can run code in the worker); the checksum guards against
corruption, not against an attacker with write access.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from poa_stream.processors import failpoints

MAGIC = b"POASNAP\x01"
FORMAT = 1
log = logging.getLogger("poa.snapshots")


class SnapshotError(ValueError):
    """A snapshot that cannot be used (damaged, another store, another policy, a tail that
    does not reproduce the stored rows)."""


@dataclass
class SnapshotInfo:
    path: Path
    seq: int
    event_id: str
    nbytes: int
    created_unix: float
    header: dict
    seconds: float = 0.0  # time to write (write) or load (load)


_CODE: list[str] = []


def code_fingerprint() -> str:
    """Hash of the sources of attribution/, processors/ and streams/ (computed once)."""
    if not _CODE:
        root = Path(__file__).resolve().parents[1]
        h = hashlib.blake2b(digest_size=16)
        for pkg in ("attribution", "processors", "streams"):
            for f in sorted((root / pkg).glob("*.py")):
                h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
        _CODE.append(h.hexdigest())
    return _CODE[0]


def schedule_entries(schedule) -> list[list]:
    return [[int(e), p.fingerprint()] for e, p in schedule.entries]


class Snapshots:
    """The snapshot files of one store (module docstring)."""

    def __init__(self, directory: Path, keep: int = 3):
        self.dir = Path(directory)
        self.keep = max(1, keep)
        self.last_seq = 0  # seq of the newest snapshot written or loaded by this process
        self.last_open: int | None = None  # its open epoch

    @classmethod
    def for_settings(cls, settings) -> "Snapshots":
        return cls(settings.snapshot_path, settings.snapshot_keep)

    # ------------------------------------------------------------------ write
    def due(self, core, every_events: int) -> bool:
        """A snapshot is due: ``every_events`` events logged since the last one, or an epoch
        closed since (and something was logged)."""
        if every_events <= 0 or core.seq <= self.last_seq:
            return False
        return core.seq - self.last_seq >= every_events or core.book.open != self.last_open

    def write(self, core) -> SnapshotInfo:
        """Snapshot ``core`` (every row it produced must be stored: ``core.written()``)."""
        t0 = time.perf_counter()
        state = core.snapshot_state()
        body = pickle.dumps(state, protocol=5)
        header = {"format": FORMAT, "seq": core.seq, "event_id": core.last_key,
                  "schedule": schedule_entries(core.schedule), "open_epoch": core.book.open,
                  "code": code_fingerprint(), "state_keys": sorted(state),
                  "body_bytes": len(body), "blake2b": hashlib.blake2b(body, digest_size=32).hexdigest(),
                  "created_unix": time.time()}
        head = json.dumps(header, sort_keys=True).encode()
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"snap-{core.seq:016d}.poa"
        tmp = self.dir / f".{path.name}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(MAGIC + struct.pack(">I", len(head)) + head)
            half = len(body) // 2
            f.write(body[:half])
            failpoints.kill("snapshot", core.seq)  # tests: a SIGKILL half-way through a write
            f.write(body[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.dir)
        self.last_seq, self.last_open = core.seq, core.book.open
        self._prune()
        return SnapshotInfo(path, core.seq, core.last_key, path.stat().st_size, header["created_unix"],
                            header, time.perf_counter() - t0)

    def _prune(self) -> None:
        for info in self.list()[self.keep:]:
            info.path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ read
    def list(self) -> list[SnapshotInfo]:
        """Snapshots whose header reads, newest first (the body is checked at load)."""
        out = []
        for p in sorted(self.dir.glob("snap-*.poa"), reverse=True):
            try:
                header = _read_header(p)[0]
                out.append(SnapshotInfo(p, int(header["seq"]), str(header["event_id"]),
                                        p.stat().st_size, float(header.get("created_unix", 0)), header))
            except (OSError, SnapshotError, KeyError, ValueError) as exc:
                log.warning("snapshot %s is unreadable (%s); ignored", p.name, exc)
        return out

    def clean_temporary(self) -> int:
        """Remove what interrupted writes left (the caller holds the writer lease)."""
        n = 0
        for p in self.dir.glob(".snap-*.tmp-*"):
            p.unlink(missing_ok=True)
            n += 1
        return n

    def read(self, info: SnapshotInfo) -> dict:
        """The state of ``info`` after checking its body (raises :class:`SnapshotError`)."""
        header, offset = _read_header(info.path)
        if header.get("format") != FORMAT:
            raise SnapshotError(f"format {header.get('format')} (this version reads {FORMAT})")
        with open(info.path, "rb") as f:
            f.seek(offset)
            body = f.read()
        if len(body) != header["body_bytes"]:
            raise SnapshotError(f"truncated: {len(body)} of {header['body_bytes']} body bytes")
        if hashlib.blake2b(body, digest_size=32).hexdigest() != header["blake2b"]:
            raise SnapshotError("checksum mismatch")
        try:
            return pickle.loads(body)
        except Exception as exc:  # a body that checks out but does not load: another version
            raise SnapshotError(f"cannot load: {type(exc).__name__}: {exc}") from None

    def set_aside(self, info: SnapshotInfo, why: str) -> None:
        log.warning("snapshot %s (seq %d) not used: %s", info.path.name, info.seq, why)
        try:
            os.replace(info.path, info.path.with_suffix(".bad"))
        except OSError:
            pass

    @staticmethod
    def check_code(info: SnapshotInfo, core) -> None:
        """The snapshot was written by this code, with this core's state attributes."""
        if info.header.get("code") != code_fingerprint():
            raise SnapshotError("written by another version of the code")
        if info.header.get("state_keys") != sorted(core.snapshot_state()):
            raise SnapshotError("its state has other attributes than this core's")

    @staticmethod
    def check_schedule(info: SnapshotInfo, schedule) -> None:
        """The snapshot's policies up to its open epoch are this schedule's."""
        open_epoch = info.header.get("open_epoch")
        limit = open_epoch if open_epoch is not None else -1

        def upto(entries):
            return [list(e) for e in entries if e[0] <= limit] or [list(entries[0])]
        mine, theirs = upto(schedule_entries(schedule)), upto(info.header.get("schedule") or [[0, ""]])
        if mine != theirs:
            raise SnapshotError(f"taken under another policy schedule ({theirs} here {mine})")


def _read_header(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        lead = f.read(len(MAGIC) + 4)
        if len(lead) < len(MAGIC) + 4 or lead[:len(MAGIC)] != MAGIC:
            raise SnapshotError("not a snapshot (bad magic)")
        (n,) = struct.unpack(">I", lead[len(MAGIC):])
        if n > 1 << 20:
            raise SnapshotError("header too long")
        head = f.read(n)
    if len(head) != n:
        raise SnapshotError("truncated header")
    try:
        return json.loads(head), len(MAGIC) + 4 + n
    except ValueError as exc:
        raise SnapshotError(f"bad header: {exc}") from None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
