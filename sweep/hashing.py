"""Content hashes (shared with the engine, which keys model variants the same way)."""

from engine import digest, file_sha256

__all__ = ["digest", "file_sha256"]
