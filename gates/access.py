"""The gate's decision: from what the face pipeline found and the person's rule to unlock or deny.

Pure and total: it reads no clock, store or model, so every path is covered by tests, and it
unlocks only on one path (a matched resident or valid visitor, allowed at this gate, now). Anything
the caller cannot establish (an exception anywhere before this) is `ERROR`, a deny.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from gates.rules import AccessRule

DecisionKind = Literal["unlock", "deny"]
Reason = Literal["matched", "unknown", "not_allowed", "expired", "blocked", "no_face", "spoof",
                 "liveness_unavailable", "error"]


@dataclass(frozen=True)
class Verdict:
    decision: DecisionKind
    reason: Reason
    # Guards must look now (a blocked face at the gate), not just find it in the record later.
    alert: bool = False

    @property
    def unlocks(self) -> bool:
        return self.decision == "unlock"


UNLOCK = Verdict("unlock", "matched")
ERROR = Verdict("deny", "error")
# Liveness is required and its model is not installed: every gate denies until it is, and says so,
# so that an installer sees a missing download, not a crash.
LIVENESS_UNAVAILABLE = Verdict("deny", "liveness_unavailable")
NO_FACE = Verdict("deny", "no_face")
UNKNOWN = Verdict("deny", "unknown")
NOT_ALLOWED = Verdict("deny", "not_allowed")
EXPIRED = Verdict("deny", "expired")
BLOCKED = Verdict("deny", "blocked", alert=True)
# A photo or screen held up to the camera is an attack on the gate, whoever's face it shows.
SPOOF = Verdict("deny", "spoof", alert=True)


def decide(*, face_found: bool, matched: bool, rule: AccessRule | None, gate_id: int,
           now: datetime, spoof: bool = False) -> Verdict:
    """`rule` is the matched person's (None only when nobody matched); `now` is aware and in the
    compound's timezone, which the weekly schedule is written in. `spoof`: liveness found a
    presentation attack; it denies before any match is looked at."""
    if now.utcoffset() is None:
        return ERROR
    if not face_found:
        return NO_FACE
    if spoof:
        return SPOOF
    if not matched:
        return UNKNOWN
    if rule is None:
        return ERROR  # a match always comes with its rule; without one nothing can be allowed
    if rule.kind == "blocked":
        return BLOCKED
    if not rule.pass_valid(now):
        return EXPIRED
    if not rule.allows_gate(gate_id) or not rule.in_schedule(now):
        return NOT_ALLOWED
    return UNLOCK
