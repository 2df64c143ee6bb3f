"""State the daemon's worker processes share: tenant concurrency counts and circuit
breakers, in one anonymous shared memory mapping made before the workers are forked.

Why shared rather than divided: a tenant's ``max_concurrent`` and a host's breaker are
promises about the daemon as a whole. Dividing ``max_concurrent: 1`` between two
workers gives either 0 or 2; dividing a breaker's threshold opens it on a different
count depending on which worker the failures land. With the state in shared memory,
``--workers 4`` enforces exactly what ``--workers 1`` does, at the price of one atomic
operation (compiled twin; a lock in the pure twin) per counter change.

Layout (int64 cells, :mod:`.atomics`): a table of tenant slots, each one cell
``key << 24 | count`` (key: a 39-bit stable hash of the tenant id; a slot whose count
is 0 may be taken over by another tenant), then a table of breaker slots of three
cells: the host key's 63-bit hash, a state word ``failures << 3 | probing << 2 |
state`` changed only by compare-and-swap, and the time it opened (ns of the breaker's
clock, which defaults to ``time.monotonic``: one clock for every process on a host).

Both tables are bounded (``TENANT_SLOTS``, ``BREAKER_SLOTS``) and looked up by hashing
with linear probing. When the tenant table is full of tenants that all have requests
in flight, a further tenant's request is refused (RATE_LIMITED) rather than let through
uncounted; a host beyond the breaker table gets a breaker of its own worker only.
"""

from __future__ import annotations

import hashlib
import mmap
from typing import Any, Optional

from vastar_fast.runtime.atomics import Cells

try:
    import cython
except ImportError:  # pragma: no cover - Cython not installed: the pure twin
    from vastar_fast import _cython_shim as cython

__all__ = ["BREAKER_SLOTS", "TENANT_SLOTS", "SharedState", "stable_hash"]

TENANT_SLOTS = 4096
BREAKER_SLOTS = 4096
_PROBE = cython.declare(cython.Py_ssize_t, 64)
"""Slots tried from a key's home slot before a table counts as full."""
_COUNT_BITS = cython.declare(cython.longlong, 24)
_COUNT_MASK = cython.declare(cython.longlong, (1 << 24) - 1)
_TENANT_KEY_BITS = 39
"""Key and count share one signed int64 cell: 39 + 24 bits, the sign bit unused."""


def stable_hash(text: str, bits: int) -> int:
    """A hash of ``text`` that is the same in every process (unlike ``hash()``); never 0."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    value = int.from_bytes(digest, "little") & ((1 << bits) - 1)
    return value or 1


@cython.cclass
class SharedState:
    """The cells and the two tables. ``shared=True`` (before forking workers) maps the
    memory shared and, for the pure twin, makes its lock process-shared."""

    tenant_slots = cython.declare(cython.Py_ssize_t, visibility="readonly")
    breaker_slots = cython.declare(cython.Py_ssize_t, visibility="readonly")
    cells = cython.declare(object, visibility="readonly")
    _map: Any
    _breaker_base: cython.Py_ssize_t

    def __init__(
        self,
        shared: bool = False,
        tenant_slots: int = TENANT_SLOTS,
        breaker_slots: int = BREAKER_SLOTS,
    ) -> None:
        self.tenant_slots = tenant_slots
        self.breaker_slots = breaker_slots
        size = (tenant_slots + 3 * breaker_slots) * 8
        self._map = mmap.mmap(-1, size)  # anonymous; MAP_SHARED on Unix: forks share it
        lock: Optional[Any] = None
        if shared:
            import multiprocessing

            lock = multiprocessing.get_context("fork").Lock()
        self.cells = Cells(self._map, lock)
        self._breaker_base = tenant_slots

    # ---------------------------------------------------------------- tenants
    def tenant_key(self, tenant_id: str) -> int:
        return stable_hash(tenant_id, _TENANT_KEY_BITS)

    def tenant_acquire(self, key: int, limit: int) -> int:
        """Count one more request in flight for the tenant if it has fewer than
        ``limit``. Returns the slot to release later, -1 when the tenant is at its
        limit, -2 when no slot is free (every nearby slot busy with other tenants).

        Slots are claimed at the first empty or idle slot of a key's probe sequence and
        never return to empty, so a key present in the table sits before the first
        empty slot of its sequence. Every change is one compare-and-swap; one that
        loses a race looks again.
        """
        if limit < 1:
            return -1
        # C integers when compiled (key < 2**39, counts < 2**24: no overflow).
        k: cython.longlong = key
        lim: cython.longlong = limit if limit < _COUNT_MASK else _COUNT_MASK
        word: cython.longlong
        free_word: cython.longlong
        free: cython.Py_ssize_t
        slot: cython.Py_ssize_t
        step: cython.Py_ssize_t
        raced: cython.bint
        cells = self.cells
        n: cython.Py_ssize_t = self.tenant_slots
        home: cython.Py_ssize_t = k % n
        while True:
            free = -1
            free_word = 0
            raced = False
            for step in range(_PROBE):
                slot = (home + step) % n
                word = cells.load(slot)
                if word >> _COUNT_BITS == k:
                    if word & _COUNT_MASK >= lim:
                        return -1
                    if cells.cas(slot, word, word + 1):
                        return slot
                    raced = True
                    break
                if free < 0 and word & _COUNT_MASK == 0:  # empty, or idle (another key)
                    free, free_word = slot, word
                if word == 0:
                    break  # the end of the key's sequence: it is not in the table
            if raced:
                continue
            if free < 0:
                return -2
            if cells.cas(free, free_word, (k << _COUNT_BITS) | 1):
                return free

    def tenant_release(self, slot: int) -> None:
        self.cells.add(slot, -1)

    def tenant_count(self, key: int) -> int:
        """Requests in flight for the tenant, over every worker."""
        cells = self.cells
        n = self.tenant_slots
        home = key % n
        for step in range(_PROBE):
            word = cells.load((home + step) % n)
            if word >> _COUNT_BITS == key:
                return word & _COUNT_MASK
            if word == 0:
                return 0
        return 0

    # ---------------------------------------------------------------- breakers
    def breaker_slot(self, host: str) -> int:
        """The first of the host's three breaker cells, claimed on first use; -1 when
        the table has no room near the host's home slot."""
        cells = self.cells
        key = stable_hash(host, 63)
        n = self.breaker_slots
        home = key % n
        for step in range(_PROBE):
            base = self._breaker_base + 3 * ((home + step) % n)
            found = cells.load(base)
            if found == key:
                return base
            if found == 0 and cells.cas(base, 0, key):
                return base
            if cells.load(base) == key:  # another worker claimed it for this host just now
                return base
        return -1
