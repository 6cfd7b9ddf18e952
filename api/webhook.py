"""Unlocks (and alert changes) POSTed to a webhook, signed, retried, and never in the way of a decision.

For controllers that cannot hold a stream open, and for other systems that want the alert feed.
Each unlock or alert change is one JSON POST with
`X-Gatewatch-Timestamp` (unix seconds) and `X-Gatewatch-Signature: sha256=<hex>`, the HMAC-SHA256
under the shared secret of `<timestamp>.<body>`: the receiver recomputes it over the raw body and
rejects a mismatch or a timestamp more than a few seconds old (a replayed unlock). Delivery runs on
its own thread: `send` only queues. Failed posts (network, 5xx, 429) are retried with growing
delays, but never beyond `max_age_s` after the decision: a late unlock would open the door for
nobody, or for the next person (an alert is worth delivering later: it is sent with a longer age).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

import requests
from pydantic import BaseModel

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Gatewatch-Signature"
TIMESTAMP_HEADER = "X-Gatewatch-Timestamp"
RETRY_DELAYS_S = (0.25, 0.5, 1.0, 2.0, 4.0)
_MAX_PENDING = 1000


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


@dataclass(order=True)
class _Delivery:
    due: float
    order: int
    body: bytes = field(compare=False)
    created: float = field(compare=False)
    attempt: int = field(compare=False, default=0)


class WebhookSender:
    def __init__(self, url: str, secret: bytes, *, max_age_s: float = 10.0, timeout_s: float = 2.0,
                 name: str = "unlock webhook", retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S) -> None:
        self.url = url
        self.name = name
        self.retry_delays_s = retry_delays_s
        self.secret = secret
        self.max_age_s = max_age_s
        self.timeout_s = timeout_s
        self.delivered = 0
        self.abandoned = 0
        self._pending: list[_Delivery] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stop = False
        self._session = requests.Session()
        self._thread = threading.Thread(target=self._run, name=name.replace(" ", "-"), daemon=True)

    def start(self) -> WebhookSender:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(self.timeout_s + 1.0)
        self._session.close()

    def send(self, message: BaseModel) -> None:
        now = time.monotonic()
        with self._cond:
            if len(self._pending) >= _MAX_PENDING:
                log.error("%s %s: %d deliveries pending; dropping %s", self.name, self.url, len(self._pending),
                          message.model_dump_json()[:200])
                self.abandoned += 1
                return
            heapq.heappush(self._pending, _Delivery(now, next(self._order), message.model_dump_json().encode(), now))
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and (not self._pending or self._pending[0].due > time.monotonic()):
                    self._cond.wait(self._pending[0].due - time.monotonic() if self._pending else None)
                if self._stop:
                    return
                delivery = heapq.heappop(self._pending)
            outcome = self._post(delivery.body)
            if outcome == "delivered":
                self.delivered += 1
            if outcome != "retry":
                continue
            delays = self.retry_delays_s
            retry_at = time.monotonic() + delays[min(delivery.attempt, len(delays) - 1)]
            if delivery.attempt + 1 >= len(delays) or retry_at - delivery.created > self.max_age_s:
                log.error("%s %s: giving up after %d attempts", self.name, self.url, delivery.attempt + 1)
                self.abandoned += 1
                continue
            delivery.due, delivery.attempt = retry_at, delivery.attempt + 1
            with self._cond:
                heapq.heappush(self._pending, delivery)

    def _post(self, body: bytes) -> Literal["delivered", "refused", "retry"]:
        """refused: a 4xx other than 429, which retrying cannot help."""
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp,
                   SIGNATURE_HEADER: sign(self.secret, timestamp, body)}
        try:
            response = self._session.post(self.url, data=body, headers=headers, timeout=self.timeout_s)
        except requests.RequestException as exc:
            log.warning("%s %s: %s", self.name, self.url, exc)
            return "retry"
        if response.status_code < 300:
            return "delivered"
        if response.status_code != 429 and response.status_code < 500:
            log.error("%s %s refused a delivery: HTTP %d", self.name, self.url, response.status_code)
            self.abandoned += 1
            return "refused"
        log.warning("%s %s: HTTP %d", self.name, self.url, response.status_code)
        return "retry"
