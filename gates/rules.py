"""Who may pass where and when: the rules attached to a person in the gallery.

Every person the gallery can recognise is a resident, a visitor or blocked. Visitors and blocked
faces are enrolled like residents so that one FAISS search answers for all three; the rule then
says what recognising them means.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from typing import Literal

PersonKind = Literal["resident", "visitor", "blocked"]


@dataclass(frozen=True)
class TimeWindow:
    """Weekly hours, local time of the compound: `days` 0 = Monday ... 6 = Sunday, start < end.
    A night shift past midnight is two windows, so a window never has to know which day it began."""

    days: frozenset[int]
    start: time
    end: time

    def __post_init__(self) -> None:
        if not self.days or not self.days <= set(range(7)):
            raise ValueError("days must be a non-empty set of 0 (Monday) ... 6 (Sunday)")
        if self.start >= self.end:
            raise ValueError(f"a window must start before it ends ({self.start} >= {self.end}); "
                             "split a window past midnight into two")

    def contains(self, local: datetime) -> bool:
        return local.weekday() in self.days and self.start <= local.time().replace(tzinfo=None) < self.end


@dataclass(frozen=True)
class AccessRule:
    """`gates` None means every gate, including gates added later; an empty set means none.
    An empty schedule means at any time. A visitor's pass is bounded by valid_from/valid_until
    (timezone-aware) and/or a number of entries left."""

    kind: PersonKind = "resident"
    gates: frozenset[int] | None = None
    schedule: tuple[TimeWindow, ...] = ()
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    entries_left: int | None = None

    def __post_init__(self) -> None:
        for moment in (self.valid_from, self.valid_until):
            if moment is not None and moment.utcoffset() is None:
                raise ValueError("pass validity times must carry a timezone")
        if self.valid_from and self.valid_until and self.valid_from >= self.valid_until:
            raise ValueError("valid_from must be before valid_until")
        if self.entries_left is not None and self.entries_left < 0:
            raise ValueError("entries_left must not be negative")
        is_pass = self.valid_from or self.valid_until or self.entries_left is not None
        if self.kind == "visitor" and not (self.valid_until or self.entries_left is not None):
            raise ValueError("a visitor pass needs valid_until or a number of entries")
        if self.kind != "visitor" and is_pass:
            raise ValueError(f"valid_from, valid_until and entries belong to visitor passes, "
                             f"not to a {self.kind}")

    def allows_gate(self, gate_id: int) -> bool:
        return self.gates is None or gate_id in self.gates

    def in_schedule(self, local_now: datetime) -> bool:
        return not self.schedule or any(window.contains(local_now) for window in self.schedule)

    def pass_valid(self, now: datetime) -> bool:
        """Always true for residents; for a visitor, inside the dates with an entry left."""
        if self.valid_from is not None and now < self.valid_from:
            return False
        if self.valid_until is not None and now >= self.valid_until:
            return False
        return self.entries_left is None or self.entries_left > 0


RESIDENT_EVERYWHERE = AccessRule()
