"""Many users, one model: a bounded FIFO of generations with a fixed number of slots.

A chat request takes a ticket; it runs when a slot is free, in arrival order. When every slot is
busy and ``max_waiting`` requests already wait, the next one is refused at once (HTTP 503 with
Retry-After) instead of piling up. A ticket whose client went away leaves the line, and a slot is
handed on the moment its generation stops. All methods run on the server's event loop.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__("the generation queue is full")
        self.retry_after = retry_after


class Ticket:
    _ids = itertools.count(1)

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.id = next(self._ids)
        self.granted = loop.create_future()
        self.released = False


class GenerationQueue:
    def __init__(self, slots: int = 1, max_waiting: int = 8, retry_after: int = 10):
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self.max_waiting = max_waiting
        self.retry_after = retry_after
        self.active = 0
        self._waiting: deque[Ticket] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def enter(self) -> Ticket:
        """A ticket, granted at once when a slot is free; ``QueueFull`` when the line is full."""
        ticket = Ticket(asyncio.get_running_loop())
        if self.active < self.slots and not self._waiting:
            self.active += 1
            ticket.granted.set_result(True)
        elif len(self._waiting) >= self.max_waiting:
            raise QueueFull(self.retry_after)
        else:
            self._waiting.append(ticket)
        return ticket

    def position(self, ticket: Ticket) -> int:
        """1 for the next in line, 0 once running."""
        if ticket.granted.done():
            return 0
        try:
            return self._waiting.index(ticket) + 1
        except ValueError:
            return 0

    def release(self, ticket: Ticket) -> None:
        """The ticket's generation ended or its client left: hand its slot on (idempotent)."""
        if ticket.released:
            return
        ticket.released = True
        if not ticket.granted.done():
            try:
                self._waiting.remove(ticket)
            except ValueError:
                pass
            ticket.granted.cancel()
            return
        self.active -= 1
        while self._waiting and self.active < self.slots:
            nxt = self._waiting.popleft()
            if nxt.released or nxt.granted.done():
                continue
            self.active += 1
            nxt.granted.set_result(True)
