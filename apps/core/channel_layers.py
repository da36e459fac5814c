"""The Redis channel layer, with a bounded connection pool that waits for a free connection.

channels_redis builds redis-py's plain `ConnectionPool` from the host settings; redis-py 6+
caps it at 100 connections and then fails at once with "Too many connections". A burst of
WebSocket handshakes (every one joins its group at the same moment) lost 9-12 % of them that
way. `BlockingConnectionPool` instead makes a caller wait up to `timeout` seconds for a
connection, so a burst queues for a few milliseconds instead of failing. Host options
(`max_connections`, `timeout`, `socket_connect_timeout`) come from CHANNEL_LAYERS.
"""

from typing import Any

from channels_redis.core import RedisChannelLayer as StockRedisChannelLayer
from redis.asyncio import BlockingConnectionPool
from redis.exceptions import RedisError

# What a channel layer operation raises when Redis is down, slow or out of connections (redis'
# ConnectionError and TimeoutError are RedisErrors; socket errors and asyncio timeouts are OSErrors).
LAYER_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)


class RedisChannelLayer(StockRedisChannelLayer):
    def create_pool(self, index: int) -> Any:
        host = dict(self.hosts[index])
        address = host.pop("address", None)
        if address is None or "master_name" in host:  # (host, port) pairs and Sentinel: the stock pool
            return super().create_pool(index)
        return BlockingConnectionPool.from_url(address, **host)
