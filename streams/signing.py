"""Signed events (ed25519).

Key registration: a JSON keys file (``POA_KEYS_FILE``) maps account -> hex ed25519 public
key, ``{"alice": "3b6a27bc..."}``. It is configuration, reviewed like code and rolled out
with the worker; it holds public keys only.

What is signed: the event's canonical JSON (sorted keys, compact, UTF-8, UTC ``ts`` with
milliseconds, as :func:`streams.events.encode_event` writes it) *without* the
``signature`` field; ``signer`` names the signing account and is part of the signed
bytes. ``signature`` is the hex of the 64-byte ed25519 signature.

Who must sign: the acting account — the contributor of a contribution, the validator of
a validation, the operator of a model, and the operator of the model for a usage event.
With enforcement on (``POA_REQUIRE_SIGNATURES=true``) an event whose acting account has a
registered key is dead-lettered unless it carries a valid signature by that account.
Accounts without a key are not checked.
"""
from __future__ import annotations

import json
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from poa_stream.streams.events import canonical_json, decode_event, event_to_dict


def signed_bytes(event_dict: dict) -> bytes:
    return canonical_json({k: v for k, v in event_dict.items() if k != "signature"})


def sign_event(event: dict, signer: str, key: SigningKey) -> dict:
    """Return ``event`` with ``signer`` and ``signature`` set (canonical form)."""
    ev = event_to_dict(decode_event(json.dumps({**event, "signer": signer})))
    ev.pop("signature", None)
    return {**ev, "signature": key.sign(signed_bytes(ev)).signature.hex()}


class KeyRegistry:
    def __init__(self, keys: dict[str, str] | None = None):
        self._keys: dict[str, VerifyKey] = {}
        for account, hexkey in (keys or {}).items():
            try:
                self._keys[account] = VerifyKey(bytes.fromhex(hexkey))
            except Exception as exc:
                raise ValueError(f"keys file: the key of {account!r} is not a hex ed25519 public key "
                                 f"(32 bytes): {exc}") from None

    @classmethod
    def from_file(cls, path: Path | None) -> "KeyRegistry":
        if path is None:
            return cls()
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the keys file {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"the keys file {path} must hold a JSON object account -> hex key")
        return cls(data)

    def __contains__(self, account: str) -> bool:
        return account in self._keys

    def check(self, event, account: str) -> str | None:
        """None if ``event`` may act for ``account``; otherwise the dead-letter reason."""
        key = self._keys.get(account)
        if key is None:
            return None
        if not event.signature:
            return f"unsigned event from {account!r}, which has a registered key"
        if event.signer != account:
            return f"signed by {event.signer!r}, but the acting account is {account!r}"
        try:
            key.verify(signed_bytes(event_to_dict(event)), bytes.fromhex(event.signature))
        except (BadSignatureError, ValueError):
            return f"bad signature for {account!r}"
        return None
