"""The gate's decision and its rules, without models or HTTP: every path to unlock and to deny."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from gates.access import BLOCKED, ERROR, EXPIRED, NO_FACE, NOT_ALLOWED, SPOOF, UNKNOWN, UNLOCK, decide
from gates.rules import AccessRule, TimeWindow

MONDAY_9 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)  # a Monday
WORK_HOURS = TimeWindow(frozenset(range(5)), time(8), time(18))


def _decide(rule: AccessRule | None, *, gate: int = 1, now: datetime = MONDAY_9, face: bool = True,
            matched: bool = True, spoof: bool = False):
    return decide(face_found=face, matched=matched, rule=rule, gate_id=gate, now=now, spoof=spoof)


def test_a_resident_of_every_gate_is_let_in_anywhere_at_any_time() -> None:
    assert _decide(AccessRule(), gate=7, now=MONDAY_9.replace(hour=3)) == UNLOCK


def test_no_face_and_unknown_faces_are_denied() -> None:
    assert _decide(None, face=False, matched=False) == NO_FACE
    assert _decide(None, matched=False) == UNKNOWN


def test_a_spoof_is_denied_with_an_alert_even_for_a_resident_allowed_here() -> None:
    assert _decide(AccessRule(), spoof=True) == SPOOF
    assert _decide(None, matched=False, spoof=True) == SPOOF
    assert SPOOF.alert and not SPOOF.unlocks


def test_a_match_without_a_rule_or_a_naive_clock_fails_secure() -> None:
    assert _decide(None) == ERROR
    assert _decide(AccessRule(), now=MONDAY_9.replace(tzinfo=None)) == ERROR


def test_allowed_gates_only() -> None:
    rule = AccessRule(gates=frozenset({1, 2}))
    assert _decide(rule, gate=2) == UNLOCK
    assert _decide(rule, gate=3) == NOT_ALLOWED
    assert _decide(AccessRule(gates=frozenset()), gate=1) == NOT_ALLOWED


def test_time_windows_in_local_time() -> None:
    rule = AccessRule(schedule=(WORK_HOURS,))
    assert _decide(rule) == UNLOCK
    assert _decide(rule, now=MONDAY_9.replace(hour=18)) == NOT_ALLOWED  # end is exclusive
    assert _decide(rule, now=MONDAY_9 + timedelta(days=5)) == NOT_ALLOWED  # Saturday
    shanghai = MONDAY_9.astimezone(ZoneInfo("Asia/Shanghai"))  # 17:00 local
    assert _decide(rule, now=shanghai) == UNLOCK
    assert _decide(rule, now=shanghai + timedelta(hours=1)) == NOT_ALLOWED


def test_visitor_pass_dates_and_entries() -> None:
    day = timedelta(days=1)
    dated = AccessRule("visitor", valid_from=MONDAY_9 - day, valid_until=MONDAY_9 + day)
    assert _decide(dated) == UNLOCK
    assert _decide(dated, now=MONDAY_9 + 2 * day) == EXPIRED
    assert _decide(dated, now=MONDAY_9 - 2 * day) == EXPIRED
    assert _decide(AccessRule("visitor", entries_left=1)) == UNLOCK
    assert _decide(AccessRule("visitor", entries_left=0)) == EXPIRED
    assert _decide(AccessRule("visitor", gates=frozenset({2}), entries_left=3), gate=1) == NOT_ALLOWED


def test_blocked_faces_never_unlock_and_alert() -> None:
    for gate in (1, 2):
        verdict = _decide(AccessRule("blocked"), gate=gate)
        assert verdict == BLOCKED and verdict.alert and not verdict.unlocks


@pytest.mark.parametrize("make", [
    lambda: TimeWindow(frozenset(), time(8), time(9)),
    lambda: TimeWindow(frozenset({7}), time(8), time(9)),
    lambda: TimeWindow(frozenset({0}), time(22), time(6)),
    lambda: AccessRule("visitor"),
    lambda: AccessRule("resident", entries_left=3),
    lambda: AccessRule("visitor", valid_until=datetime(2025, 1, 1)),
    lambda: AccessRule("visitor", valid_from=MONDAY_9, valid_until=MONDAY_9),
])
def test_inconsistent_rules_are_refused(make) -> None:
    with pytest.raises(ValueError):
        make()
