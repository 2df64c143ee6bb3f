"""Unit tests of the pieces that need no daemon: config, breaker, policy, redaction."""

from __future__ import annotations

import logging

import pytest
import yaml

from vastar_fast.runtime import config as config_mod
from vastar_fast.runtime.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerOpen
from vastar_fast.runtime.config import ConfigError, parse_tcp, settings_from_mapping
from vastar_fast.runtime.policy import PolicyEngine
from vastar_fast.runtime.redact import RedactingFilter, redact_headers, redact_url
from vastar_fast.types import ErrorClass


def test_documented_example_config_loads() -> None:
    doc = config_mod.__doc__ or ""
    example = doc.split("Example (every key shown with its default unless noted)::", 1)[1]
    settings = settings_from_mapping(yaml.safe_load(example))
    assert settings.limits.credits_per_connection == 1024
    assert settings.tenants["acme"].max_concurrent == 64
    assert settings.policy_for("unknown") is settings.tenants["default"]


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"limits": {"credits": 5}}, "limits.credits: unknown key"),
        ({"limitz": {}}, "limitz: unknown key"),
        ({"retry": {"max_attempts": "3"}}, "retry.max_attempts: expected an integer"),
        ({"retry": {"max_attempts": 0}}, "retry.max_attempts: must be greater than 0"),
        ({"tenants": {"a": {"allowed_hosts": "x"}}}, "tenants.a.allowed_hosts: expected a list"),
        ({"tenants": {"a": {"tls_verify": "no"}}}, "tenants.a.tls_verify: expected true or false"),
        ({"tenants": {"a": {"max_response_bytes": 20_000_000}}}, "10 MiB frame"),
        ({"listen": {"tcp": "host:port"}}, "listen.tcp"),
        ({"log_level": "LOUD"}, "log_level"),
        ([1, 2], "mapping"),
    ],
)
def test_config_errors_name_the_key(data: object, needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        settings_from_mapping(data)
    assert needle in str(info.value)


def test_default_tenant_is_added_when_missing() -> None:
    settings = settings_from_mapping({"tenants": {"acme": {"max_concurrent": 2}}})
    assert "default" in settings.tenants


def test_parse_tcp() -> None:
    assert parse_tcp("127.0.0.1:5000") == ("127.0.0.1", 5000)
    assert parse_tcp(":0") == ("127.0.0.1", 0)
    assert parse_tcp("[::1]:7") == ("::1", 7)
    with pytest.raises(ConfigError):
        parse_tcp("x:99999")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_state_machine() -> None:
    clock = Clock()
    changes = []
    b = Breaker("h", 2, 5.0, clock, lambda host, state: changes.append(state))
    assert b.check() is False
    b.record_failure()
    assert b.state == CLOSED
    b.record_failure()
    assert b.state == OPEN
    with pytest.raises(BreakerOpen, match=r"probe the host again in 5\.0s"):
        b.check()
    clock.now += 3
    with pytest.raises(BreakerOpen, match=r"again in 2\.0s"):
        b.check()
    clock.now += 2
    assert b.check() is True  # the single probe
    assert b.state == HALF_OPEN
    with pytest.raises(BreakerOpen, match="probe request is in flight"):
        b.check()
    b.record_failure()  # probe failed: open again, new timer
    assert b.state == OPEN and b.retry_in() == 5.0
    clock.now += 5
    assert b.check() is True
    b.release_probe()  # a cancelled probe lets the next caller probe
    assert b.check() is True
    b.record_success()
    assert b.state == CLOSED and b.failures == 0
    assert changes == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]


def test_breaker_success_resets_consecutive_count() -> None:
    b = Breaker("h", 3, 1.0, Clock())
    for _ in range(5):
        b.record_failure()
        b.record_failure()
        b.record_success()
    assert b.state == CLOSED


def test_policy_globs_and_limits() -> None:
    settings = settings_from_mapping(
        {
            "tenants": {
                "t": {
                    "allowed_hosts": ["api.example.com", "*.svc.local", "10.0.0.1:8080"],
                    "max_concurrent": 1,
                    "max_request_bytes": 10,
                }
            }
        }
    )
    engine = PolicyEngine(settings)
    t = engine.tenant("t")
    assert PolicyEngine.check(t, "API.example.com", 443, 1) is None
    assert PolicyEngine.check(t, "a.svc.local", 80, 1) is None
    assert PolicyEngine.check(t, "10.0.0.1", 8080, 1) is None
    denial = PolicyEngine.check(t, "10.0.0.1", 8081, 1)
    assert denial is not None and denial[0] == ErrorClass.PERMANENT
    denial = PolicyEngine.check(t, "api.example.com", 443, 11)
    assert denial is not None and "max_request_bytes" in denial[1]
    slot = t.acquire()
    assert slot >= 0 and t.in_flight == 1
    assert t.acquire() == -1  # max_concurrent 1
    denial = t.refusal(-1)
    assert denial[0] == ErrorClass.RATE_LIMITED and "tenants.t.max_concurrent" in denial[1]
    t.release(slot)
    assert t.in_flight == 0 and t.acquire() >= 0
    other = engine.tenant("someone")
    assert other.key == "tenants.default" and other is not engine.tenant("else")


def test_redaction() -> None:
    h = redact_headers({"Authorization": "Bearer x", "X-API-Key": "k", "Cookie": "c",
                        "X-Goog-Api-Key": "g", "Content-Type": "text/plain"})  # fmt: skip
    assert h == {"Authorization": "[REDACTED]", "X-API-Key": "[REDACTED]", "Cookie": "[REDACTED]",
                 "X-Goog-Api-Key": "[REDACTED]", "Content-Type": "text/plain"}  # fmt: skip
    assert redact_url("https://u:pw@h/p?key=abc&page=2&access_token=t") == (
        "https://[REDACTED]@h/p?key=[REDACTED]&page=2&access_token=[REDACTED]"
    )


def test_redacting_filter_scrubs_any_record() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "sending %s with %s", ("Bearer sk-abc123",
        "{'x-api-key': 'k-999', 'a': 'b'}"), None,
    )  # fmt: skip
    assert RedactingFilter().filter(record)
    text = record.getMessage()
    assert "sk-abc123" not in text and "k-999" not in text and "'a': 'b'" in text
