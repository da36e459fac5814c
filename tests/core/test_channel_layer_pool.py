"""The channel layer's Redis pool under a burst, and an idle receive, on a private Redis with
the site's host options: a burst of group joins waits for free connections (redis-py's plain
pool fails the ones past 100 with "Too many connections"), and a receive with nothing to
receive outlasts the layer's 5 s blocking pop (redis-py's default 5 s socket timeout did not)."""

import asyncio
import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

pytestmark = pytest.mark.usefixtures("layer_on_private_redis")

BURST = 200


def test_a_burst_of_group_joins_waits_for_free_connections_instead_of_failing():
    async def burst() -> list[BaseException | None]:
        layer = get_channel_layer()
        channels = [await layer.new_channel() for _ in range(BURST)]
        try:
            return await asyncio.gather(*[layer.group_add("crowd", c) for c in channels], return_exceptions=True)
        finally:
            await layer.close_pools()

    outcomes = async_to_sync(burst)()

    assert [o for o in outcomes if o is not None] == []
    layer = get_channel_layer()
    assert layer.hosts[0]["max_connections"] < BURST  # the burst really had to queue


def test_an_idle_receive_outlasts_the_layers_blocking_pop():
    async def late_message() -> tuple[dict, float]:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        started = time.monotonic()

        async def send_later() -> None:
            await asyncio.sleep(layer.brpop_timeout + 1.5)  # past one empty BZPOPMIN
            await layer.send(channel, {"type": "run.event", "seq": 1})

        sender = asyncio.ensure_future(send_later())
        try:
            message = await asyncio.wait_for(layer.receive(channel), timeout=layer.brpop_timeout + 10)
        finally:
            await sender
            await layer.close_pools()
        return message, time.monotonic() - started

    message, waited = async_to_sync(late_message)()

    assert message == {"type": "run.event", "seq": 1}
    assert waited > 5
