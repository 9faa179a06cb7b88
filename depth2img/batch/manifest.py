"""``manifest.jsonl``: one JSON object per line, appended once per finished item (ok or failed).

Appending is crash-safe without rewriting the file: each record is one ``write()`` of a complete line
on a descriptor opened with ``O_APPEND`` (so concurrent appenders never interleave within a line on
POSIX), then fsync. A process killed mid-write leaves at most one truncated last line, which
:func:`read_manifest` skips. The latest record for a key wins, so a redone item simply appends again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.jsonl"


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes (hex), streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def settings_hash(settings: Mapping[str, Any]) -> str:
    """A short, order-independent fingerprint of JSON-able settings (sorted keys)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def append_record(path: str | Path, record: Mapping[str, Any]) -> None:
    """Append one record as one line (see the module docstring for why this is safe)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(path: str | Path, key: str = "item") -> dict[str, dict[str, Any]]:
    """The latest record per ``key`` value; unreadable (truncated) lines are skipped."""
    records: dict[str, dict[str, Any]] = {}
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return records
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and key in record:
            records[str(record[key])] = record
    return records
