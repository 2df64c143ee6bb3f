"""Settings of the AI endpoint simulator."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Tuple

from .faults import FAULT_KINDS


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
    #: Standard deviations of the two delays (normal draws from the seeded
    #: latency generator, clipped at zero); 0 keeps them fixed.
    ttft_std_ms: float = 0.0
    token_delay_std_ms: float = 0.0
    #: Prefill: extra time to first token per prompt token, in milliseconds.
    prefill_ms_per_token: float = 0.0
    #: Latency multiplier reached when ``max_concurrency`` sequences run at once
    #: (linear from 1.0 with one sequence); needs ``max_concurrency``.
    load_factor: float = 1.0
    #: Sequences generated at once; more requests wait in a FIFO queue (0: no cap).
    max_concurrency: int = 0
    #: How many token-like pieces go into one content chunk.
    tokens_per_chunk: int = 1
    #: Length of every generated answer in tokens (None: the answer's own length).
    answer_tokens: Optional[int] = None
    #: Request and token budgets per API key and minute (None: not enforced).
    rpm: Optional[int] = None
    tpm: Optional[int] = None
    #: Probability (0..1) that a generation request gets a random fault.
    fault_rate: float = 0.0
    #: The kinds random faults are drawn from.
    fault_kinds: Tuple[str, ...] = FAULT_KINDS
    #: Seed of the fault, latency and generated-text generators; same seed -> same run.
    seed: Optional[int] = None
    #: Upper bound of a "stall" fault, so a stalled stream cannot pin the server.
    stall_max_s: float = 60.0
    #: How many content chunks a "disconnect"/"stall"/"truncate" fault sends first
    #: (and where a "latency_spike" pauses).
    fault_after_chunks: int = 3
    #: Length of a "latency_spike" fault's pause, in milliseconds.
    spike_ms: float = 1000.0
    #: Retry-After value (seconds) sent with simulated 429 responses.
    retry_after_s: int = 1
    #: Maximum number of cached rendered responses (keyed by request body).
    cache_size: int = 512
    #: Record mode: forward every request to ``upstream`` and store the exchanges here.
    record_dir: Optional[str] = None
    upstream: Optional[str] = None
    #: Replay mode: serve the exchanges stored here, ``replay_speed`` times as fast
    #: as they were recorded (0: no waiting at all).
    replay_dir: Optional[str] = None
    replay_speed: float = 1.0

    def __post_init__(self) -> None:
        for name in (
            "ttft_ms",
            "token_delay_ms",
            "ttft_std_ms",
            "token_delay_std_ms",
            "prefill_ms_per_token",
            "spike_ms",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)})")
        if self.tokens_per_chunk < 1:
            raise ValueError("tokens_per_chunk must be >= 1")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError("fault_rate must be within [0, 1]")
        if self.stall_max_s < 0:
            raise ValueError("stall_max_s must be >= 0")
        if self.fault_after_chunks < 0:
            raise ValueError("fault_after_chunks must be >= 0")
        if self.max_concurrency < 0:
            raise ValueError("max_concurrency must be >= 0 (0: no cap)")
        if self.load_factor < 1.0:
            raise ValueError("load_factor must be >= 1 (1: latency does not grow with load)")
        if self.load_factor != 1.0 and self.max_concurrency < 2:
            raise ValueError(
                "load_factor needs max_concurrency >= 2: the factor is reached when "
                "max_concurrency sequences run at once"
            )
        if self.answer_tokens is not None and self.answer_tokens < 1:
            raise ValueError("answer_tokens must be >= 1")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1")
        unknown = set(self.fault_kinds) - set(FAULT_KINDS)
        if unknown or not self.fault_kinds:
            raise ValueError(f"fault_kinds must be a non-empty subset of {FAULT_KINDS}")
        if self.record_dir is not None and not self.upstream:
            raise ValueError("record mode needs an upstream URL (--upstream)")
        if self.upstream and self.record_dir is None:
            raise ValueError("--upstream is only used with --record DIR")
        if self.record_dir is not None and self.replay_dir is not None:
            raise ValueError("choose either record or replay mode, not both")
        if self.replay_speed < 0:
            raise ValueError("replay_speed must be >= 0 (0: no waiting)")

    @classmethod
    def fast(cls, **overrides: object) -> SimulatorSettings:
        """Settings with zero delays (tests, benchmarks); ``overrides`` win."""
        base = cls(ttft_ms=0.0, token_delay_ms=0.0)
        return replace(base, **overrides)  # type: ignore[arg-type]

    @property
    def zero_delay(self) -> bool:
        """True when nothing needs to sleep, enabling the single-write path."""
        return (
            self.ttft_ms == 0
            and self.token_delay_ms == 0
            and self.ttft_std_ms == 0
            and self.token_delay_std_ms == 0
            and self.prefill_ms_per_token == 0
        )
