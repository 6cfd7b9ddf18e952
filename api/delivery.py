"""Unlocks on their way to the gate controllers' open command streams (api/commands.py).

Decisions are made on the gate runtime's thread; the streams are served on the server's event
loop. The hub hands each unlock across, to every stream open for its gate.
"""

from __future__ import annotations

import asyncio
import logging

from api.schemas import UnlockCommand

log = logging.getLogger(__name__)

# Commands a controller has not read yet; beyond that it is not reading, and the oldest go.
_QUEUE_SIZE = 32


class CommandHub:
    """Fans unlocks out to the open streams of their gate. `publish` may be called from any thread;
    the queues live on the event loop the hub was bound to."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: dict[int, set[asyncio.Queue[UnlockCommand | None]]] = {}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self, gate_id: int) -> asyncio.Queue[UnlockCommand | None]:
        queue: asyncio.Queue[UnlockCommand | None] = asyncio.Queue(_QUEUE_SIZE)
        self._queues.setdefault(gate_id, set()).add(queue)
        return queue

    def unsubscribe(self, gate_id: int, queue: asyncio.Queue[UnlockCommand | None]) -> None:
        queues = self._queues.get(gate_id, set())
        queues.discard(queue)
        if not queues:
            self._queues.pop(gate_id, None)

    def listeners(self, gate_id: int) -> int:
        return len(self._queues.get(gate_id, ()))

    def publish(self, command: UnlockCommand) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._put, command.gate_id, command)

    def close(self) -> None:
        """Ends every open stream (the server is shutting down)."""
        if self._loop is not None and not self._loop.is_closed():
            for gate_id in list(self._queues):
                self._loop.call_soon_threadsafe(self._put, gate_id, None)

    def _put(self, gate_id: int, command: UnlockCommand | None) -> None:
        for queue in self._queues.get(gate_id, ()):
            if queue.full():
                dropped = queue.get_nowait()
                log.warning("gate %d's controller is not reading its commands; dropped %s", gate_id, dropped)
            queue.put_nowait(command)
