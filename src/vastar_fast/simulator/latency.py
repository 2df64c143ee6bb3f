"""The simulator's latency model: time to first token, inter-token delay, prefill, load.

Per request the model draws (from one seeded :class:`random.Random`, separate
from the fault generator so latency draws never shift the fault sequence):

* time to first token = ``ttft_ms`` (+ normal noise of ``ttft_std_ms``)
  + ``prefill_ms_per_token`` x prompt tokens;
* each gap between content chunks = ``token_delay_ms`` (+ noise of
  ``token_delay_std_ms``); draws are clipped at zero;
* both scaled by the load: with ``max_concurrency`` N and ``load_factor`` F, a
  chunk produced while k sequences run waits ``1 + (F - 1) * (k - 1) / (N - 1)``
  times as long (llm-d's "time factor under load").

The ``x-simulator-latency`` request header overrides the settings for one
request: ``ttft_ms=50, token_delay_ms=5, ttft_std_ms=10, token_delay_std_ms=1,
prefill_ms_per_token=0.2`` (any subset, comma separated).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, Optional

from .settings import SimulatorSettings

__all__ = ["LATENCY_HEADER", "LatencyModel", "Timing", "parse_timing"]

LATENCY_HEADER = "x-simulator-latency"


@dataclass(frozen=True)
class Timing:
    """The delays that apply to one request, in milliseconds."""

    ttft_ms: float = 0.0
    token_delay_ms: float = 0.0
    ttft_std_ms: float = 0.0
    token_delay_std_ms: float = 0.0
    prefill_ms_per_token: float = 0.0
    #: True when nothing needs to sleep (computed once: it is read per request).
    zero: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "zero",
            self.ttft_ms == 0
            and self.token_delay_ms == 0
            and self.ttft_std_ms == 0
            and self.token_delay_std_ms == 0
            and self.prefill_ms_per_token == 0,
        )

    @classmethod
    def of(cls, settings: SimulatorSettings) -> Timing:
        return cls(
            settings.ttft_ms,
            settings.token_delay_ms,
            settings.ttft_std_ms,
            settings.token_delay_std_ms,
            settings.prefill_ms_per_token,
        )


_KEYS = tuple(f.name for f in fields(Timing) if f.init)


def parse_timing(value: str, base: Timing) -> Timing:
    """``"ttft_ms=50, token_delay_ms=5"`` -> ``base`` with those fields replaced.

    Raises ValueError with a message naming the bad item and the valid keys.
    """
    changes: Dict[str, Any] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key = key.strip().lower().replace("-", "_")
        if not sep or key not in _KEYS:
            raise ValueError(
                f"{LATENCY_HEADER}: cannot use {item!r}; expected key=value pairs with keys "
                + ", ".join(_KEYS)
            )
        try:
            number = float(raw)
        except ValueError:
            number = -1.0
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"{LATENCY_HEADER}: {key} must be a number >= 0, got {raw.strip()!r}")
        changes[key] = number
    return replace(base, **changes)


class LatencyModel:
    """Seeded delay draws and the concurrency bookkeeping behind the load factor."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.base = Timing.of(settings)
        self._rng = random.Random(None if settings.seed is None else settings.seed ^ 0x5EED)
        self._factor = settings.load_factor - 1.0
        self._span = max(1, settings.max_concurrency - 1)
        #: Sequences being generated right now (maintained by the app).
        self.active = 0
        self._parsed: Dict[str, Timing] = {}

    def timing(self, header: Optional[str]) -> Timing:
        """The timing of a request with this ``x-simulator-latency`` value (cached)."""
        if header is None:
            return self.base
        timing = self._parsed.get(header)
        if timing is None:
            timing = parse_timing(header, self.base)
            if len(self._parsed) < 256:
                self._parsed[header] = timing
        return timing

    def scale(self) -> float:
        if self._factor == 0.0 or self.active <= 1:
            return 1.0
        return 1.0 + self._factor * min(1.0, (self.active - 1) / self._span)

    def _draw(self, mean: float, std: float) -> float:
        if std > 0.0:
            return max(0.0, self._rng.gauss(mean, std))
        return mean

    def ttft(self, timing: Timing, prompt_tokens: int) -> float:
        """Seconds before the first content chunk."""
        ms = self._draw(timing.ttft_ms, timing.ttft_std_ms)
        ms += timing.prefill_ms_per_token * prompt_tokens
        return ms * self.scale() / 1000.0

    def gap(self, timing: Timing) -> float:
        """Seconds between two content chunks."""
        return self._draw(timing.token_delay_ms, timing.token_delay_std_ms) * self.scale() / 1000.0

    def total(self, timing: Timing, prompt_tokens: int, chunks: int) -> float:
        """Seconds a non-streamed answer of ``chunks`` chunks takes (one draw for the
        gaps: their sum is normal with n times the mean and sqrt(n) times the std)."""
        gaps = max(0, chunks - 1)
        ms = self._draw(timing.token_delay_ms * gaps, timing.token_delay_std_ms * math.sqrt(gaps))
        return self.ttft(timing, prompt_tokens) + ms * self.scale() / 1000.0
