"""Settings of the AI endpoint simulator."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional


@dataclass(frozen=True)
class SimulatorSettings:
    """Behaviour knobs of one simulator application.

    The defaults imitate a real hosted model (a noticeable time to first token
    and a steady token rate) so connectors see realistic pacing; benchmarks and
    tests use :meth:`fast` (no delays at all), which also switches the server to
    its single-write fast path.
    """

    #: Delay before the first content chunk (streaming) or before the whole
    #: response (non-streaming), in milliseconds.
    ttft_ms: float = 200.0
    #: Delay between two consecutive content chunks, in milliseconds.
    token_delay_ms: float = 20.0
    #: How many token-like pieces go into one content chunk.
    tokens_per_chunk: int = 1
    #: Probability (0..1) that a generation request gets a random fault.
    fault_rate: float = 0.0
    #: Seed of the fault RNG; same seed -> same fault sequence.
    seed: Optional[int] = None
    #: Upper bound of a "stall" fault, so a stalled stream cannot pin the server.
    stall_max_s: float = 60.0
    #: How many content chunks a "disconnect"/"stall" fault sends first.
    fault_after_chunks: int = 3
    #: Retry-After value (seconds) sent with simulated 429 responses.
    retry_after_s: int = 1
    #: Maximum number of cached rendered responses (keyed by request body).
    cache_size: int = 512

    def __post_init__(self) -> None:
        if self.ttft_ms < 0 or self.token_delay_ms < 0:
            raise ValueError("delays must be >= 0")
        if self.tokens_per_chunk < 1:
            raise ValueError("tokens_per_chunk must be >= 1")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError("fault_rate must be within [0, 1]")
        if self.stall_max_s < 0:
            raise ValueError("stall_max_s must be >= 0")
        if self.fault_after_chunks < 0:
            raise ValueError("fault_after_chunks must be >= 0")

    @classmethod
    def fast(cls, **overrides: object) -> SimulatorSettings:
        """Settings with zero delays (tests, benchmarks); ``overrides`` win."""
        base = cls(ttft_ms=0.0, token_delay_ms=0.0)
        return replace(base, **overrides)  # type: ignore[arg-type]

    @property
    def zero_delay(self) -> bool:
        """True when nothing needs to sleep, enabling the single-write path."""
        return self.ttft_ms == 0 and self.token_delay_ms == 0
