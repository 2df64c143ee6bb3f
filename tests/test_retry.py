"""retry_with_backoff: the released algorithm, logging instead of printing."""

from __future__ import annotations

import logging

import pytest

from vastar_fast import ConnectorException, ErrorClass, retry_with_backoff


def test_retries_retryable_errors_with_doubling_backoff(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sleeps: list = []
    monkeypatch.setattr("vastar_fast.retry.time.sleep", sleeps.append)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise ConnectorException("busy", ErrorClass.RATE_LIMITED, len(calls))
        return "done"

    caplog.set_level(logging.WARNING, logger="vastar_fast")
    assert (
        retry_with_backoff(flaky, max_retries=3, initial_backoff_ms=1000, max_backoff_ms=2500)
        == "done"
    )
    assert sleeps == [1.0, 2.0, 2.5]
    assert len([r for r in caplog.records if "retry" in r.getMessage()]) == 3
    assert capsys.readouterr().out == ""


def test_gives_up_after_max_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vastar_fast.retry.time.sleep", lambda s: None)
    calls = []

    def always() -> None:
        calls.append(1)
        raise ConnectorException("down", ErrorClass.TRANSIENT, 1)

    with pytest.raises(ConnectorException):
        retry_with_backoff(always, max_retries=2)
    assert len(calls) == 3


def test_non_retryable_and_foreign_errors_propagate_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("vastar_fast.retry.time.sleep", lambda s: pytest.fail("must not sleep"))
    with pytest.raises(ConnectorException):
        retry_with_backoff(
            lambda: (_ for _ in ()).throw(ConnectorException("bad", ErrorClass.INVALID_REQUEST, 1))
        )
    with pytest.raises(KeyError):
        retry_with_backoff(lambda: {}["x"])


def test_custom_retryable_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vastar_fast.retry.time.sleep", lambda s: None)
    calls = []

    def perm() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectorException("p", ErrorClass.PERMANENT, 1)
        return "ok"

    assert retry_with_backoff(perm, retryable_errors=["PERMANENT"]) == "ok"
    with pytest.raises(ConnectorException):
        retry_with_backoff(
            lambda: (_ for _ in ()).throw(ConnectorException("t", ErrorClass.TIMEOUT, 1)),
            retryable_errors=["TRANSIENT"],
        )
