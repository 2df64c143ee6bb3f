"""Fault selection for the simulator.

Faults are chosen per generation request, either explicitly through the
``x-simulator-fault`` request header or at random with probability
``fault_rate``. The random choice uses its own seeded :class:`random.Random`
and always consumes exactly two draws per request when ``fault_rate > 0``, so
the same seed and the same sequence of requests give the same sequence of
faults, whatever the header said on individual requests.

Some faults take a parameter after a colon in the header (``truncate:5``: end
the stream cleanly after 5 content chunks; ``latency_spike:750``: one pause of
750 ms mid-stream); without one, or when drawn at random, the settings'
``fault_after_chunks`` and ``spike_ms`` apply.
"""

from __future__ import annotations

import random
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

RATE_LIMIT = "rate_limit"
SERVER_ERROR = "server_error"
DISCONNECT = "disconnect"
STALL = "stall"
MALFORMED = "malformed"
TRUNCATE = "truncate"
DUPLICATE = "duplicate"
LATENCY_SPIKE = "latency_spike"
OVERLOADED = "overloaded"

#: All fault kinds, in the order used by the random choice (keep it stable:
#: reordering changes which fault a given seed produces; new kinds go last).
FAULT_KINDS: Tuple[str, ...] = (
    RATE_LIMIT,
    SERVER_ERROR,
    DISCONNECT,
    STALL,
    MALFORMED,
    TRUNCATE,
    DUPLICATE,
    LATENCY_SPIKE,
    OVERLOADED,
)

#: Faults answered with an HTTP error instead of a (partial) body.
ERROR_FAULTS = frozenset((RATE_LIMIT, SERVER_ERROR, OVERLOADED))

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
    "truncate": TRUNCATE,
    "duplicate": DUPLICATE,
    "latency_spike": LATENCY_SPIKE,
    "latency-spike": LATENCY_SPIKE,
    "spike": LATENCY_SPIKE,
    "overloaded": OVERLOADED,
    "529": OVERLOADED,
    "503": OVERLOADED,
}

#: Kinds that accept a numeric parameter after a colon.
_PARAMETRIC = frozenset((TRUNCATE, LATENCY_SPIKE))


class Fault(NamedTuple):
    """A chosen fault: its kind and its parameter (None: the settings' default)."""

    kind: str
    param: Optional[float] = None


def parse_fault(value: Optional[str]) -> Tuple[bool, Optional[Fault]]:
    """Parse a header value -> (recognised, fault). ``none`` means "no fault"."""
    if value is None:
        return False, None
    key = value.strip().lower()
    param: Optional[float] = None
    if ":" in key:
        key, _, raw = key.partition(":")
        key = key.strip()
        try:
            param = float(raw)
        except ValueError:
            return False, None
        if key not in _PARAMETRIC or param < 0:
            return False, None
    if key in _ALIASES:
        kind = _ALIASES[key]
        return True, None if kind is None else Fault(kind, param)
    return False, None


def parse_kinds(value: str) -> Tuple[str, ...]:
    """``"truncate,duplicate"`` -> canonical kinds; ValueError naming an unknown one."""
    kinds = []
    for item in value.split(","):
        item = item.strip().lower()
        if not item:
            continue
        kind = _ALIASES.get(item)
        if kind is None:
            raise ValueError(f"unknown fault kind {item!r}; choose among {', '.join(FAULT_KINDS)}")
        kinds.append(kind)
    if not kinds:
        raise ValueError("no fault kind given")
    return tuple(kinds)


class FaultInjector:
    """Decides which fault (if any) a generation request gets."""

    def __init__(
        self,
        rate: float = 0.0,
        seed: Optional[int] = None,
        kinds: Sequence[str] = FAULT_KINDS,
    ) -> None:
        self.rate = rate
        self.kinds = tuple(kinds) or FAULT_KINDS
        self._rng = random.Random(seed)
        self.counts: Dict[str, int] = dict.fromkeys(FAULT_KINDS, 0)

    def choose(self, header_value: Optional[str]) -> Optional[Fault]:
        """Return the fault for this request, or None.

        An explicit, recognised header wins over the random draw (``none``
        suppresses a random fault), but the draw happens anyway so one
        request's header does not shift the seeded sequence for the others.
        """
        if header_value is None and self.rate == 0.0:
            return None
        drawn: Optional[Fault] = None
        if self.rate > 0.0:
            roll = self._rng.random()
            kind = self._rng.choice(self.kinds)
            if roll < self.rate:
                drawn = Fault(kind)
        recognised, explicit = parse_fault(header_value)
        chosen = explicit if recognised else drawn
        if chosen is not None:
            self.counts[chosen.kind] += 1
        return chosen
