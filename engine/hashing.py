"""Content hashes used for point ids, spec hashes and cache keys."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest(obj: Any, n: int = 12) -> str:
    """Hex prefix of sha256 over canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
