"""Alert changes on their way to the guard screens' open streams (api/alerts.py).

Changes are committed on whatever thread raised them; the streams are served on the event loop.
The feed only wakes the streams: what each sends comes from the store's durable sequence, so a
stream that was slow, or away, sends exactly the changes after the last one it sent.
"""

from __future__ import annotations

import asyncio

from gates.alerts import AlertChange


class AlertFeed:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self.closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._changed = asyncio.Event()

    def waiter(self) -> asyncio.Event:
        """Taken before reading the store, so that a change committed in between still wakes the reader."""
        assert self._changed is not None, "bind() first"
        return self._changed

    def notify(self, change: AlertChange | None = None) -> None:
        """Any thread. A listener of gates.alerts.AlertStore."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake)

    def close(self) -> None:
        """Ends every open stream (the server is shutting down)."""
        self.closed = True
        self.notify()

    def _wake(self) -> None:
        if self._changed is not None:
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()
