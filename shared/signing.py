"""HMAC signatures of ModelVersion records (pure: no Kafka, no environment).

A publisher signs the canonical encoding of every field but ``signature``; a reader with
the same key verifies it before the record can touch its registry. The canonical form
must survive an Avro round trip, so it drops nulls and empty lists (the default and the
absence are the same to an Avro reader, which is how a field added later stays verifiable) and
writes an integral float as an int (a map<double> written from ints reads back as floats).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from typing import Any

SIGNATURE_FIELD = "signature"
#: Names the scheme, so that a later change of canonical form can be told apart.
SCHEME = "hmac-sha256-v1"
_DOMAIN = b"driftloop.ModelVersion\n"


def _normalise(value: Any) -> Any:
    if isinstance(value, Mapping):
        # A field added later reads back as its default (null, or [] for status_history)
        # from an older writer: the default and the absence must sign alike.
        return {str(k): _normalise(v) for k, v in value.items() if v is not None and v != []}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        if not math.isfinite(value):
            return repr(value)  # 'nan', 'inf', '-inf': JSON has no spelling for them
    return value


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: every field except the signature, in a fixed form."""
    body = {k: v for k, v in record.items() if k != SIGNATURE_FIELD}
    return _DOMAIN + json.dumps(_normalise(body), sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _key_bytes(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else key


def signature(record: Mapping[str, Any], key: bytes | str) -> str:
    digest = hmac.new(_key_bytes(key), canonical(record), hashlib.sha256).hexdigest()
    return f"{SCHEME}:{digest}"


def sign(record: Mapping[str, Any], key: bytes | str) -> dict[str, Any]:
    """A copy of ``record`` carrying its signature (any earlier signature is replaced)."""
    return {**record, SIGNATURE_FIELD: signature(record, key)}


def verify(record: Mapping[str, Any], key: bytes | str) -> bool:
    """True if ``record`` carries a valid signature made with ``key``."""
    given = record.get(SIGNATURE_FIELD)
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode(), signature(record, key).encode())
