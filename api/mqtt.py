"""The MQTT bridge (Frigate style): alerts, gate decisions and camera status on a broker, for home
automation and the compound's other systems. On only when `mqtt_url` is set.

Topics, under `mqtt_topic_prefix` (default `gatewatch`), all QoS 1:

- `<p>/available`: "online" / "offline", retained; the broker publishes "offline" (the last will)
  when the service drops off without saying goodbye.
- `<p>/alerts`: every alert change, `{"type": "new"|"update"|"end", "before": ..., "after": ...}`
  (the alert as it stood before the change, null for a new one, and after it).
- `<p>/access`: every gate decision, `{"gate_id", "camera_id", "decision", "reason", "resident":
  {"id", "name"} | null, "similarity", "event_id", "at"}`; never face data.
- `<p>/cameras/<id>/status`: "online" / "offline", retained.

Nothing is lost while the broker is down: each message is first written to the outbox
(gates/outbox.py, in the service's SQLite file) and a publisher thread sends them oldest first,
deleting a row only once the broker has acknowledged it (PUBACK). While disconnected it waits;
paho's network thread reconnects with backoff, and sends again what was in flight. A message whose
PUBACK was lost in a crash is sent again at the next start (at least once, never zero times).
`available` is the one topic that skips the outbox: it says whether this connection is up, so it
is published on every connect and at stop, and the last will covers the rest.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections import deque
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from api.live import AccessNotice
from api.settings import Settings
from gates.alerts import AlertChange
from gates.outbox import Outbox

log = logging.getLogger(__name__)

CHANGE_TYPES = {"created": "new", "updated": "update", "acknowledged": "update", "resolved": "end"}
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class MqttBridge:
    """`window`: messages handed to paho at once, waiting for their PUBACK."""

    def __init__(self, settings: Settings, outbox: Outbox, *, window: int = 100, keepalive_s: int = 30,
                 reconnect_min_s: int = 1, reconnect_max_s: int = 10,
                 client_factory: Callable[..., mqtt.Client] = mqtt.Client) -> None:
        if settings.mqtt_url is None:
            raise ValueError("the MQTT bridge needs mqtt_url")
        url = urlsplit(settings.mqtt_url)
        self.outbox = outbox
        self.prefix = settings.mqtt_topic_prefix.strip("/")
        self.available_topic = f"{self.prefix}/available"
        self._host, self._port = url.hostname or "127.0.0.1", url.port or DEFAULT_PORTS[url.scheme]
        self._keepalive_s, self._window = keepalive_s, window
        self.client = client_factory(CallbackAPIVersion.VERSION2,
                                     client_id=f"{self.prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
                                     protocol=mqtt.MQTTv311, clean_session=True)
        username = settings.mqtt_username or (unquote(url.username) if url.username else None)
        password = (settings.mqtt_password.get_secret_value() if settings.mqtt_password is not None
                    else unquote(url.password) if url.password else None)
        if username is not None:
            self.client.username_pw_set(username, password)
        if url.scheme == "mqtts" or settings.mqtt_ca_file is not None:
            self.client.tls_set(ca_certs=None if settings.mqtt_ca_file is None else str(settings.mqtt_ca_file))
        self.client.will_set(self.available_topic, "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)
        # Room for the whole window (and "online"/"offline") in flight: paho then never parks one of
        # ours as "queued", whose resend after a reconnect can stall the ones behind it.
        self.client.max_inflight_messages_set(window + 10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- what the service tells it (any thread) ------------------------------------------------

    def on_alert_change(self, change: AlertChange) -> None:
        self._put(f"{self.prefix}/alerts", {
            "type": CHANGE_TYPES[change.type],
            "before": None if change.before is None else change.before.to_json(),
            "after": change.alert.to_json()})

    def on_access(self, notice: AccessNotice) -> None:
        resident = (None if notice.resident_id is None else
                    {"id": notice.resident_id, "name": notice.resident_name})
        self._put(f"{self.prefix}/access", {
            "gate_id": notice.gate_id, "camera_id": notice.camera_id, "decision": notice.decision,
            "reason": notice.reason, "resident": resident, "similarity": notice.similarity,
            "event_id": notice.event_id, "at": notice.at})

    def on_camera_status(self, camera_id: str, status: str) -> None:
        self._put(f"{self.prefix}/cameras/{camera_id}/status", status, retain=True)

    def _put(self, topic: str, payload: object, retain: bool = False) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
        try:
            self.outbox.put(topic, text, retain)
        except Exception:
            log.exception("could not queue an MQTT message for %s: %s", topic, text[:500])
            return
        self._wake.set()

    # --- life ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connects in the background: a broker that is down at start is retried like a lost one."""
        self.client.connect_async(self._host, self._port, keepalive=self._keepalive_s)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._publish_loop, name="mqtt-publisher", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Publishes "offline" (if connected) and disconnects; what is unsent stays in the outbox."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s + 5)
        if self._connected.is_set():
            info = self.client.publish(self.available_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError) as exc:
                log.warning("MQTT: could not publish offline: %s", exc)
        self.client.disconnect()
        self.client.loop_stop()
        self.outbox.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # --- paho's network thread --------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    properties: object) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT broker %s:%d refused the connection: %s", self._host, self._port, reason)
            return
        log.info("MQTT connected to %s:%d", self._host, self._port)
        client.publish(self.available_topic, "online", qos=1, retain=True)
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                       properties: object) -> None:
        if self._connected.is_set():
            log.warning("MQTT disconnected from %s:%d (%s); reconnecting", self._host, self._port, reason)
        self._connected.clear()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: object,
                    properties: object) -> None:
        self._wake.set()

    # --- the publisher thread ----------------------------------------------------------------------

    def _publish_loop(self) -> None:
        """Hands the outbox to paho oldest first, at most `window` unacknowledged at once, and deletes
        rows in order as their PUBACKs come. What is in flight when the connection drops stays in
        paho's queue and is sent again on reconnect, so it is not handed over twice."""
        pending: deque[tuple[int, mqtt.MQTTMessageInfo]] = deque()
        last_id = 0
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                if self._connected.is_set() and len(pending) < self._window:
                    for message in self.outbox.peek(self._window - len(pending), after_id=last_id):
                        info = self.client.publish(message.topic, message.payload, qos=1, retain=message.retain)
                        pending.append((message.id, info))
                        last_id = message.id
                done = []
                while pending and pending[0][1].is_published():
                    done.append(pending.popleft()[0])
                if done:
                    self.outbox.delete(done)
                    continue
            except Exception:
                log.exception("MQTT publisher failed; retrying in a second")
                self._stopping.wait(1.0)
                continue
            self._wake.wait(0.5)
