"""``retry_with_backoff``: the released SDK's retry helper, logging instead of printing."""

from __future__ import annotations

import time

from ._log import lazy_logger
from .errors import ConnectorException

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, List, Optional, TypeVar

    T = TypeVar("T")

__all__ = ["retry_with_backoff"]

log = lazy_logger("vastar_fast.retry")

DEFAULT_RETRYABLE_ERRORS = ("TRANSIENT", "RATE_LIMITED", "TIMEOUT")


def retry_with_backoff(
    func: Callable[[], T],
    max_retries: int = 3,
    initial_backoff_ms: int = 1000,
    max_backoff_ms: int = 30000,
    retryable_errors: Optional[List[str]] = None,
) -> T:
    """Call ``func``; retry a retryable ``ConnectorException`` with exponential backoff.

    The backoff starts at ``initial_backoff_ms`` and doubles up to ``max_backoff_ms``;
    at most ``max_retries`` further attempts are made. Exceptions that are not
    ``ConnectorException``, or whose class name is not in ``retryable_errors``, propagate
    at once. The last failure propagates once the retries are used up.
    """
    retryable = DEFAULT_RETRYABLE_ERRORS if retryable_errors is None else retryable_errors
    backoff_ms = initial_backoff_ms
    attempt = 0
    while True:
        try:
            return func()
        except ConnectorException as exc:
            if exc.get_error_class_name() not in retryable or attempt >= max_retries:
                raise
            attempt += 1
            log.warning(
                "retry %d/%d after %d ms: %s (request_id=%s)",
                attempt,
                max_retries,
                backoff_ms,
                exc.get_error_class_name(),
                exc.request_id,
            )
            time.sleep(backoff_ms / 1000.0)
            backoff_ms = min(backoff_ms * 2, max_backoff_ms)
