"""The Vastar connector runtime daemon (``vastar runtime`` / ``python -m vastar_fast.runtime``).

Wire-compatible with the released runtime (the released SDKs work unchanged against it)
and fixes what that one gets wrong: concurrent requests per connection, enforced
deadlines, honest error classes, answers to bad frames. Adds the backward-compatible
extensions of docs/protocol.md (HealthCheck, CreditUpdate, streaming, CancelRequest).

``RuntimeServer`` runs the daemon in a background thread for tests and demos; the
daemon itself needs the ``runtime`` extra (aiohttp, PyYAML; optionally uvloop and
prometheus-client), imported only when it starts.
"""

from .config import ConfigError, RuntimeSettings, TenantPolicy, load_settings
from .embed import RuntimeServer

__all__ = ["ConfigError", "RuntimeServer", "RuntimeSettings", "TenantPolicy", "load_settings"]
