"""The one shape every live-event consumer shares: authorise in `connect()`, join one group,
leave it on disconnect. An unauthorised socket is refused exactly like one to a missing object.

When the channel layer fails (Redis down or out of connections) or the database does, the
socket is closed so the client reconnects and resyncs over REST; the outage is logged once, not
as a traceback per socket. Leaving the group is bounded in time: a dead Redis must hold neither a closing socket
nor a server that is shutting down."""

import asyncio
import contextlib
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from .channel_layers import LAYER_ERRORS
from .middleware import DATABASE_DOWN_ERRORS
from .outages import CHANNEL_LAYER, DATABASE

NOT_FOUND_CLOSE_CODE = 4404
TRY_AGAIN_LATER_CLOSE_CODE = 1013  # RFC 6455 registry: "Try Again Later"; the run page reconnects
DISCARD_TIMEOUT_SECONDS = 2.0


class AuthorizedGroupConsumer(AsyncJsonWebsocketConsumer):
    group_name: str | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except LAYER_ERRORS as error:  # joining the group, or the layer's receive loop, failed
            CHANNEL_LAYER.failed(error, action="serve a live-event socket")
        except DATABASE_DOWN_ERRORS as error:  # the authorisation query in connect() failed
            DATABASE.failed(error, action="authorise a live-event socket")
        else:
            return
        with contextlib.suppress(Exception):  # the client may be gone already
            await self.close(code=TRY_AGAIN_LATER_CLOSE_CODE)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Call the handler, without channels' hop to the database thread before each one.

        Channels closes stale database connections before every handler: one trip through the
        single database thread per message, per socket. With 200 viewers that queues 200 trips
        behind each event, and a burst of handshakes waits behind them past daphne's 5 s
        handshake timeout. Our handlers touch the database only through database_sync_to_async,
        which closes stale connections itself, before and after."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self.disconnect(message["code"])  # (channels' own also leaves self.groups: we have none)
        raise StopConsumer()

    async def group_for_requester(self) -> str | None:
        """The group to join, or None when the requester may not see the object."""
        raise NotImplementedError

    async def connect(self) -> None:
        group = await self.group_for_requester()
        if group is None:
            await self.close(code=NOT_FOUND_CLOSE_CODE)
            return
        await self.channel_layer.group_add(group, self.channel_name)
        self.group_name = group
        CHANNEL_LAYER.succeeded()
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group_name is None:
            return
        try:
            await asyncio.wait_for(
                self.channel_layer.group_discard(self.group_name, self.channel_name), DISCARD_TIMEOUT_SECONDS
            )
        except LAYER_ERRORS as error:  # the membership expires with the group; nothing is lost
            CHANNEL_LAYER.failed(error, action="leave a live-event group")
        finally:
            self.group_name = None


class DatabaseOutageGuard:
    """Outermost WebSocket middleware: the session and user lookups of AuthMiddlewareStack run
    before any consumer, so a database outage there would escape to the server (a 500 and a
    traceback per handshake). Here it is refused like the consumer's own outage, with
    TRY_AGAIN_LATER_CLOSE_CODE, and logged once per outage."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.inner(scope, receive, send)
        except DATABASE_DOWN_ERRORS as error:
            DATABASE.failed(error, action="look up a live-event socket's session")
            with contextlib.suppress(Exception):  # the client may be gone already
                await send({"type": "websocket.close", "code": TRY_AGAIN_LATER_CLOSE_CODE})
