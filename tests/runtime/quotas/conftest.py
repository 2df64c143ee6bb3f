"""A real Redis for the fleet quotas' tests (tests/redis_support.py)."""

from redis_support import redis_prefix, redis_server  # noqa: F401
