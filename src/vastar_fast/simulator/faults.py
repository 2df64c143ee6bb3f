"""Fault selection for the simulator.

Faults are chosen per generation request, either explicitly through the
``x-simulator-fault`` request header or at random with probability
``fault_rate``. The random choice uses its own seeded :class:`random.Random`
and always consumes exactly two draws per request when ``fault_rate > 0``, so
the same seed and the same sequence of requests give the same sequence of
faults, whatever the header said on individual requests.
"""

from __future__ import annotations

import random
from typing import Dict, Optional, Tuple

RATE_LIMIT = "rate_limit"
SERVER_ERROR = "server_error"
DISCONNECT = "disconnect"
STALL = "stall"
MALFORMED = "malformed"

#: All fault kinds, in the order used by the random choice (keep it stable:
#: reordering changes which fault a given seed produces).
FAULT_KINDS: Tuple[str, ...] = (RATE_LIMIT, SERVER_ERROR, DISCONNECT, STALL, MALFORMED)

#: Faults answered with an HTTP error instead of a (partial) body.
ERROR_FAULTS = frozenset((RATE_LIMIT, SERVER_ERROR))

FAULT_HEADER = "x-simulator-fault"

_ALIASES: Dict[str, Optional[str]] = {
    "none": None,
    "off": None,
    "": None,
    "rate_limit": RATE_LIMIT,
    "rate-limit": RATE_LIMIT,
    "429": RATE_LIMIT,
    "server_error": SERVER_ERROR,
    "server-error": SERVER_ERROR,
    "500": SERVER_ERROR,
    "disconnect": DISCONNECT,
    "stall": STALL,
    "malformed": MALFORMED,
}


def parse_fault(value: Optional[str]) -> Tuple[bool, Optional[str]]:
    """Parse a header value -> (recognised, kind). ``none`` means "no fault"."""
    if value is None:
        return False, None
    key = value.strip().lower()
    if key in _ALIASES:
        return True, _ALIASES[key]
    return False, None


class FaultInjector:
    """Decides which fault (if any) a generation request gets."""

    def __init__(self, rate: float = 0.0, seed: Optional[int] = None) -> None:
        self.rate = rate
        self._rng = random.Random(seed)
        self.counts: Dict[str, int] = dict.fromkeys(FAULT_KINDS, 0)

    def choose(self, header_value: Optional[str]) -> Optional[str]:
        """Return the fault kind for this request, or None.

        An explicit, recognised header wins over the random draw (``none``
        suppresses a random fault), but the draw happens anyway so one
        request's header does not shift the seeded sequence for the others.
        """
        drawn: Optional[str] = None
        if self.rate > 0.0:
            roll = self._rng.random()
            kind = self._rng.choice(FAULT_KINDS)
            if roll < self.rate:
                drawn = kind
        recognised, explicit = parse_fault(header_value)
        chosen = explicit if recognised else drawn
        if chosen is not None:
            self.counts[chosen] += 1
        return chosen
