"""retry_with_backoff: the released algorithm, logging instead of printing.

Every test counts the calls and the sleeps, so a class retried that must not be (or
not retried that must) fails the test instead of ending in the same exception."""

from __future__ import annotations

import logging
from typing import List

import pytest

from vastar_fast import ConnectorException, ErrorClass, retry_with_backoff


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> List[float]:
    slept: List[float] = []
    monkeypatch.setattr("vastar_fast.retry.time.sleep", slept.append)
    return slept


def failing(error_class: ErrorClass, calls: List[int], succeed_after: int = 10**9):  # type: ignore[no-untyped-def]
    def func() -> str:
        calls.append(1)
        if len(calls) <= succeed_after:
            raise ConnectorException("boom", error_class, len(calls))
        return "done"

    return func


def test_retries_retryable_errors_with_doubling_backoff(
    sleeps: List[float], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: List[int] = []
    caplog.set_level(logging.WARNING, logger="vastar_fast")
    func = failing(ErrorClass.RATE_LIMITED, calls, succeed_after=3)
    assert (
        retry_with_backoff(func, max_retries=3, initial_backoff_ms=1000, max_backoff_ms=2500)
        == "done"
    )
    assert len(calls) == 4
    assert sleeps == [1.0, 2.0, 2.5]
    assert len([r for r in caplog.records if "retry" in r.getMessage()]) == 3
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "error_class", [ErrorClass.TRANSIENT, ErrorClass.RATE_LIMITED, ErrorClass.TIMEOUT]
)
def test_each_default_retryable_class_is_retried_until_max_retries(
    sleeps: List[float], error_class: ErrorClass
) -> None:
    calls: List[int] = []
    with pytest.raises(ConnectorException) as info:
        retry_with_backoff(failing(error_class, calls), max_retries=2, initial_backoff_ms=10)
    assert info.value.request_id == 3  # the last failure propagates
    assert len(calls) == 3
    assert sleeps == [0.01, 0.02]


@pytest.mark.parametrize(
    "error_class", [ErrorClass.PERMANENT, ErrorClass.INVALID_REQUEST, ErrorClass.SUCCESS]
)
def test_non_retryable_classes_propagate_at_once(
    sleeps: List[float], error_class: ErrorClass
) -> None:
    calls: List[int] = []
    with pytest.raises(ConnectorException) as info:
        retry_with_backoff(failing(error_class, calls))
    assert info.value.error_class == error_class
    assert len(calls) == 1
    assert sleeps == []


def test_foreign_errors_propagate_at_once(sleeps: List[float]) -> None:
    calls: List[int] = []

    def func() -> None:
        calls.append(1)
        raise KeyError("x")

    with pytest.raises(KeyError):
        retry_with_backoff(func)
    assert len(calls) == 1 and sleeps == []


def test_custom_retryable_list(sleeps: List[float]) -> None:
    calls: List[int] = []
    func = failing(ErrorClass.PERMANENT, calls, succeed_after=1)
    assert retry_with_backoff(func, retryable_errors=["PERMANENT"]) == "done"
    assert len(calls) == 2 and sleeps == [1.0]
    calls.clear()
    sleeps.clear()
    with pytest.raises(ConnectorException) as info:
        retry_with_backoff(failing(ErrorClass.TIMEOUT, calls), retryable_errors=["TRANSIENT"])
    assert info.value.error_class == ErrorClass.TIMEOUT
    assert len(calls) == 1 and sleeps == []  # TIMEOUT is not in the list: no retry


def test_zero_retries_means_one_attempt(sleeps: List[float]) -> None:
    calls: List[int] = []
    with pytest.raises(ConnectorException):
        retry_with_backoff(failing(ErrorClass.TRANSIENT, calls), max_retries=0)
    assert len(calls) == 1 and sleeps == []
