"""The mock cloud's state: one JSON document on disk, changed only under an exclusive file lock.

A scheduler, its standby and a test each open their own `MockCloud` on the same folder and must see one
cloud, across restarts: so the truth lives in the file, never in memory. The lock is `fcntl.flock` on a
separate lock file (the document itself is replaced atomically on every write, which would drop a lock
held on it). Calls are blocking and short; async callers run them in a thread.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

Document = dict[str, Any]

_VERSION = 1


def empty_document() -> Document:
    return {
        "version": _VERSION,
        "servers": {},
        "volumes": {},
        # Every worker process ever started and not yet seen dead: what a teardown must not leave behind.
        "processes": [],
        "faults": {"power_on": {}, "out_of_stock": [], "transient_calls": 0},
    }


class StateFile:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "state.json"
        self._lock_path = directory / "state.lock"

    def apply(self, change: Callable[[Document], T]) -> T:
        """Run `change` on the document under the lock; write it back if it changed and `change` returned."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                doc = self._read()
                before = json.dumps(doc, sort_keys=True)
                result = change(doc)
                if json.dumps(doc, sort_keys=True) != before:
                    self._write(doc)
                return result
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> Document:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return empty_document()
        doc: Document = json.loads(text)
        if doc.get("version") != _VERSION:
            raise ValueError(f"{self.path}: unsupported mock cloud state version {doc.get('version')!r}")
        return doc

    def _write(self, doc: Document) -> None:
        # Write then rename, so a reader (or a crash) never sees half a document.
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".state-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(doc, out, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
