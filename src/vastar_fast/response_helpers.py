"""``HTTPResponseHelper``: the released SDK's static helpers over :class:`HTTPResponse`."""

from __future__ import annotations

from .types import HTTPResponse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional

__all__ = ["HTTPResponseHelper"]


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
        import json  # here, not at ``import vastar_fast``: most programs never call this

        return json.loads(response.body)

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
