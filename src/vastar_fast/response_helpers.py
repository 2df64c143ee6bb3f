"""``HTTPResponseHelper``: the released SDK's static helpers over :class:`HTTPResponse`."""

from __future__ import annotations

from .types import HTTPResponse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional

__all__ = ["HTTPResponseHelper"]

# json is imported by the first get_body_as_json, not by ``import vastar_fast``, and kept
# here so that later calls pay no import statement.
_json: Any = None


def _import_json() -> Any:
    global _json
    import json

    _json = json
    return json


class HTTPResponseHelper:
    """Status-range checks and body/header accessors."""

    @staticmethod
    def is_2xx(response: HTTPResponse) -> bool:
        return 200 <= response.status_code < 300

    @staticmethod
    def is_3xx(response: HTTPResponse) -> bool:
        return 300 <= response.status_code < 400

    @staticmethod
    def is_4xx(response: HTTPResponse) -> bool:
        return 400 <= response.status_code < 500

    @staticmethod
    def is_5xx(response: HTTPResponse) -> bool:
        return 500 <= response.status_code < 600

    @staticmethod
    def get_body_as_string(response: HTTPResponse, encoding: str = "utf-8") -> str:
        return response.body.decode(encoding)

    @staticmethod
    def get_body_as_json(response: HTTPResponse) -> Any:
        return (_json or _import_json()).loads(response.body)

    @staticmethod
    def get_header(response: HTTPResponse, name: str) -> Optional[str]:
        """Case-insensitive header lookup; None when absent."""
        headers = response.headers
        value = headers.get(name)
        if value is not None:
            return value
        lowered = name.lower()
        value = headers.get(lowered)
        if value is not None:
            return value
        for key, value in headers.items():
            if key.lower() == lowered:
                return value
        return None
