"""The one shape every live-event consumer shares: authorise in `connect()`, join one group,
leave it on disconnect. An unauthorised socket is refused exactly like one to a missing object."""

from channels.generic.websocket import AsyncJsonWebsocketConsumer

NOT_FOUND_CLOSE_CODE = 4404


class AuthorizedGroupConsumer(AsyncJsonWebsocketConsumer):
    group_name: str | None = None

    async def group_for_requester(self) -> str | None:
        """The group to join, or None when the requester may not see the object."""
        raise NotImplementedError

    async def connect(self) -> None:
        group = await self.group_for_requester()
        if group is None:
            await self.close(code=NOT_FOUND_CLOSE_CODE)
            return
        self.group_name = group
        await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group_name is not None:
            await self.channel_layer.group_discard(self.group_name, self.channel_name)
