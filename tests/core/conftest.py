"""Fixtures for fault tests: a private Redis this test may kill (the suite's shared Redis on 6379
serves every other test and is never stopped), and outage logs reset between tests."""

import shutil
import signal
import subprocess
from collections.abc import Iterator

import pytest
import redis

from apps.core import outages
from tests.integration.servers import free_port, wait_until


class PrivateRedis:
    """A throwaway redis-server on a free port, without persistence; `kill()` is a crash."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.answers, timeout=10, what="private redis-server", process=self.process)

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=1)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.kill()


# The host options of config/settings/base.py, for runs of the suite without Redis configured.
SITE_HOST_OPTIONS = {"max_connections": 50, "timeout": 10.0, "socket_connect_timeout": 5, "socket_timeout": 15}


@pytest.fixture
def layer_on_private_redis(settings, private_redis: PrivateRedis) -> PrivateRedis:
    """The site's channel layer (its class and host options) on the private Redis."""
    configured = settings.CHANNEL_LAYERS["default"]
    hosts = configured.get("CONFIG", {}).get("hosts") or [SITE_HOST_OPTIONS]
    options = {**hosts[0], "address": private_redis.url}
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "apps.core.channel_layers.RedisChannelLayer",
            "CONFIG": {"hosts": [options], "prefix": "faults"},
        }
    }  # assigning the setting drops the cached layer instance
    return private_redis


@pytest.fixture(autouse=True)
def no_outage_in_progress() -> Iterator[None]:
    for outage in (outages.CHANNEL_LAYER, outages.BROKER, outages.DATABASE):
        outage.reset()
    yield
    for outage in (outages.CHANNEL_LAYER, outages.BROKER, outages.DATABASE):
        outage.reset()
