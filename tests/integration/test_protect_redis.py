"""Two API processes sharing one Redis (127.0.0.1:6379) enforce ONE rate limit.

Both are real ``exportd serve`` (uvicorn) child processes on loopback, each with its own data
directory, pointed at the same Redis with a key prefix unique to this test run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.e2e.conftest import Server
from tests.integration.conftest import auth

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"exportd-test-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()  # a Redis that is down fails the test here, loudly
    try:
        yield prefix
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()


def test_two_api_processes_share_one_limit_through_redis(
    tmp_path: Path, sample_db: Path, redis_prefix: str
) -> None:
    """read 5/minute per user. Alice alternates between the two servers: exactly 5 requests
    pass in all (not 5 per server), the sixth and later are 429 from either server with
    Retry-After, and the counters are in Redis under this run's prefix."""
    env = {
        "EXPORTD_REDIS_URL": REDIS_URL,
        "EXPORTD_REDIS_KEY_PREFIX": redis_prefix,
        "EXPORTD_RATE_LIMIT_READ_PER_USER": "5/minute",
    }
    servers = [Server(tmp_path / name, sample_db, dict(env)) for name in ("a", "b")]
    try:
        for server in servers:
            server.start()
        statuses = []
        for number in range(8):
            server = servers[number % 2]
            answer = httpx.get(f"{server.base_url}/v1/credits", headers=auth("alice"), timeout=30)
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                assert int(answer.headers["retry-after"]) >= 1
                assert '"read-user";r=0' in answer.headers["ratelimit"]
        assert statuses == [200] * 5 + [429] * 3
        other = httpx.get(f"{servers[1].base_url}/v1/credits", headers=auth("bob"), timeout=30)
        assert other.status_code == 200
        keys = list(redis.Redis.from_url(REDIS_URL).scan_iter(f"{redis_prefix}*"))
        assert keys, "no rate-limit counter was written to Redis"
    finally:
        for server in servers:
            server.stop()
