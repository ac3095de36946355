"""One record to its handler: decode, note its event_id, call, dead-letter on error.

The batch loop and the testing harness both hand records over through here, so a unit
test meets exactly the error handling the running service has.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka import ConsumerRecord

from driftloop.shared.runtime.service import Route, Service


def event_id_of(record: object) -> str | None:
    """A decoded record's event_id: a field of a record, or an attribute of what a custom
    decoder returns (ingestion's validated record)."""
    event_id = record.get("event_id") if isinstance(record, Mapping) else getattr(record, "event_id", None)
    return event_id if isinstance(event_id, str) else None


class Dispatcher:
    def __init__(self, svc: Service[Any]) -> None:
        self.svc = svc
        self._cursor = svc.cursor
        self._ctx = svc.context
        self._outbox = svc.outbox
        self._letters = svc.dead_letters

    def route(self, topic: str) -> Route[Any]:
        return self.svc.routes[topic]

    async def handle(self, route: Route[Any], message: ConsumerRecord) -> None:
        """Handle one record: a record whose decoding or handler raises is dead-lettered
        with the error's code (and its event_id, once decoded) and the batch carries on."""
        cursor = self._cursor
        cursor.message = message
        cursor.event_id = None
        try:
            record = route.decode(message)
            cursor.event_id = event_id_of(record)
            await route.handler(record, self._ctx)
        except Exception as exc:  # noqa: BLE001 - outermost loop: dead-letter (by code), go on
            self._outbox.append(self._letters.letter(message, exc, cursor.event_id))

    async def handle_all(self, topic: str, records: list[ConsumerRecord]) -> None:
        """Handle the records of one partition, once the topic's handler may start."""
        route = self.svc.routes[topic]
        if route.after is not None:
            await route.after.wait()
        for record in records:
            await self.handle(route, record)
        self._cursor.message = None
        self.svc.count_in(topic, len(records))
