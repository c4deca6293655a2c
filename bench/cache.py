"""The same page cache state before every timed run, baseline or pitrdrill.

`settle` writes back what the previous run left dirty (else its writeback lands in the next
run's time), drops the page cache when the kernel lets us (we are root; a container may
refuse), then reads the run's inputs once, as `cat files > /dev/null` would: each run starts
with its backup and WAL in memory and nothing else left over from the run before.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_DROP_CACHES = Path("/proc/sys/vm/drop_caches")
_CHUNK = 4 << 20


def _files_under(path: Path) -> Iterable[Path]:
    if path.is_file():
        yield path
        return
    for root, _, names in os.walk(path):
        yield from (Path(root, name) for name in names)


def _read_once(path: Path, buffer: bytearray) -> int:
    total = 0
    with path.open("rb", buffering=0) as stream:
        while count := stream.readinto(buffer):
            total += count
    return total


class PageCache:
    def __init__(self) -> None:
        self.drop_refused = self._drop()

    def _drop(self) -> str | None:
        """None when the caches were dropped, else why not."""
        try:
            _DROP_CACHES.write_text("3\n")
        except OSError as exc:
            return str(exc)
        return None

    @property
    def method(self) -> str:
        if self.drop_refused is None:
            return "sync + drop_caches + pre-warm inputs, before every timed run"
        return f"sync + pre-warm inputs, before every timed run (drop_caches: {self.drop_refused})"

    def settle(self, warm: Iterable[Path]) -> int:
        """Put the cache in the common state; returns the bytes pre-warmed."""
        os.sync()
        if self.drop_refused is None:
            self.drop_refused = self._drop()
        buffer = bytearray(_CHUNK)
        return sum(_read_once(file, buffer) for path in warm for file in _files_under(path))
