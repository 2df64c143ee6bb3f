"""Keeping secrets out of logs.

Request headers and URLs are only ever logged through :func:`redact_headers` and
:func:`redact_url`; :class:`RedactingFilter` is a second line of defence installed on
the daemon's log handler, scrubbing credential-looking ``name: value`` / ``name=value``
pairs and bearer tokens from any record, including third-party ones.
"""

from __future__ import annotations

import logging
import re
from typing import Dict, Mapping

__all__ = ["REDACTED", "RedactingFilter", "is_secret_name", "redact_headers", "redact_url"]

REDACTED = "[REDACTED]"
_SECRET_WORDS = ("key", "token", "secret", "auth", "password", "cookie", "session")


def is_secret_name(name: str) -> bool:
    """Header or parameter names whose values must never be logged."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redact_headers(headers: Mapping[str, str]) -> Dict[str, str]:
    return {k: (REDACTED if is_secret_name(k) else v) for k, v in headers.items()}


_QUERY_PAIR = re.compile(r"([?&;])([^=&;#]+)=([^&;#]*)")


def redact_url(url: str) -> str:
    """The URL with secret-looking query parameter values and userinfo removed."""

    def fix(m: re.Match[str]) -> str:
        if is_secret_name(m.group(2)):
            return f"{m.group(1)}{m.group(2)}={REDACTED}"
        return m.group(0)

    url = re.sub(r"(//)[^/@?#]+@", r"\1" + REDACTED + "@", url, count=1)
    return _QUERY_PAIR.sub(fix, url)


_SCRUB = re.compile(
    r"(?i)(bearer\s+|basic\s+)[A-Za-z0-9._~+/=-]+"
    r"|([\"']?[\w-]*(?:key|token|secret|auth|password)[\w-]*[\"']?\s*[:=]\s*)"
    r"(?:\"[^\"]*\"|'[^']*'|[^\s,;&}]+)"
)


def _scrub(text: str) -> str:
    def fix(m: re.Match[str]) -> str:
        if m.group(1):
            return m.group(1) + REDACTED
        return m.group(2) + REDACTED

    return _SCRUB.sub(fix, text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message, and its traceback, with credential-looking values
    and URL secrets removed (a traceback's frames can hold a request's headers or URL)."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler
            return True
        scrubbed = _scrub_urls(_scrub(message))
        if scrubbed != message:
            record.msg = scrubbed
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _scrub_urls(_scrub(record.exc_text))
        if record.stack_info:
            record.stack_info = _scrub_urls(_scrub(record.stack_info))
        return True


_URL = re.compile(r"https?://[^\s'\"<>]+")


def _scrub_urls(text: str) -> str:
    """Every URL in ``text`` through :func:`redact_url` (userinfo, secret parameters)."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)
