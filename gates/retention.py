"""Retention: resolved alerts, their snapshots and their throws' evidence files go after a while.

Alerts carry faces and pictures of residents' homes; what is no longer needed is deleted, not
kept for ever. Open alerts are never deleted, however old: a guard must still close them. The
throw record stays in the list (floor, column, time) without its image and clip.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gates.alerts import AlertStore
from gates.service_store import ServiceStore, UnknownEventError

log = logging.getLogger(__name__)


def sweep(alerts: AlertStore, store: ServiceStore, days: int, now: datetime | None = None) -> int:
    """Deletes what is older than `days`; returns the number of alerts deleted."""
    gone = alerts.delete_older_than((now or datetime.now(UTC)) - timedelta(days=days))
    for alert in gone:
        if alert.throw_id is None:
            continue
        try:
            record = store.get_throw(alert.throw_id)
        except UnknownEventError:
            continue
        for name in (record.image_path, record.clip_path):
            if name:
                Path(name).unlink(missing_ok=True)
    if gone:
        log.info("retention: deleted %d resolved alerts older than %d days", len(gone), days)
    return len(gone)
