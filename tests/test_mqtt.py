"""The MQTT bridge against a real broker (Debian's mosquitto, started by the test on a free loopback
port), and its outbox: nothing raised while the broker is down is lost."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from conftest import ADMIN_KEY
from live_server import free_port, live_service

from gates.gallery import DB_NAME
from gates.outbox import Outbox

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).is_file()), None)
needs_broker = pytest.mark.skipif(MOSQUITTO is None, reason="the mosquitto broker is not installed "
                                  "(apt-get install mosquitto; .ci/run does)")
A = {"X-API-Key": ADMIN_KEY}


def test_outbox_keeps_messages_in_order_until_deleted(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / DB_NAME)
    try:
        ids = [outbox.put("p/alerts", json.dumps({"n": n}), retain=n == 1) for n in range(5)]
        assert ids == sorted(ids) and outbox.count() == 5
        first = outbox.peek(2)
        assert [m.id for m in first] == ids[:2]
        assert [json.loads(m.payload)["n"] for m in first] == [0, 1]
        assert [m.retain for m in first] == [False, True] and first[0].topic == "p/alerts"
        assert [m.id for m in outbox.peek(10, after_id=ids[2])] == ids[3:]
        outbox.delete(ids[:3])
        assert outbox.count() == 2 and [m.id for m in outbox.peek(10)] == ids[3:]
        outbox.delete([])
    finally:
        outbox.close()
    reopened = Outbox(tmp_path / DB_NAME)  # what was not yet acknowledged survives a restart
    try:
        assert [m.id for m in reopened.peek(10)] == ids[3:]
        assert reopened.put("p/x", "y") > ids[-1]  # ids are never reused
    finally:
        reopened.close()


class Broker:
    """mosquitto on 127.0.0.1:port. Persistence on (in the test's folder), so the subscriber's session
    and its queued QoS 1 messages survive a restart of the broker."""

    def __init__(self, folder: Path, port: int) -> None:
        self.port, self.folder = port, folder
        self.config = folder / "mosquitto.conf"
        self.config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                               f"persistence_location {folder}/\nmax_queued_messages 10000\n"
                               "log_dest stderr\nlog_type error\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            assert self.process.poll() is None, self.process.stderr.read().decode()
            try:
                import socket

                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: mosquitto saves its sessions and exits
            self.process.wait(10)


class Subscriber:
    """A paho client collecting everything under the prefix, with a persistent session."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, str, bool]] = []
        self.changed = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gatewatch-test-subscriber",
                                  clean_session=False)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("gatewatch/#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self.changed:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))
            self.changed.notify_all()

    def on(self, topic: str) -> list[str]:
        with self.changed:
            return [payload for t, payload, _ in self.messages if t == topic]

    def wait(self, predicate, timeout: float = 15) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _alerts(sub: Subscriber) -> list[dict]:
    return [json.loads(p) for p in sub.on("gatewatch/alerts")]


def _raise(base: str, key: str, n: int) -> int:
    r = httpx.post(f"{base}/api/v1/alerts", headers={"X-API-Key": key}, timeout=10,
                   json={"kind": "smoke", "source": {"type": "sensor", "id": f"s{n}"}, "message": f"smoke {n}"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


@needs_broker
def test_bridge_publishes_alerts_access_and_availability_and_loses_nothing_while_the_broker_is_down(
        tmp_path: Path, analyzer) -> None:
    port = free_port()
    broker = Broker(tmp_path, port)
    broker.start()
    sub = Subscriber(port)
    data_dir = tmp_path / "data"
    try:
        with live_service(data_dir, analyzer, mqtt_url=f"mqtt://127.0.0.1:{port}", rate_limit_burst=1000,
                          rate_limit_per_minute=100_000) as base:
            assert sub.wait(lambda: "online" in sub.on("gatewatch/available"))
            key = httpx.post(f"{base}/api/v1/keys", headers=A, json={"role": "integration"}).json()["key"]
            first = _raise(base, key, 0)
            r = httpx.post(f"{base}/api/v1/alerts/{first}/ack", headers=A, json={})
            assert r.status_code == 200, r.text
            r = httpx.post(f"{base}/api/v1/alerts/{first}/resolve", headers=A, json={"note": "x"})
            assert r.status_code == 200, r.text
            assert sub.wait(lambda: len(_alerts(sub)) >= 3)
            new, ack, end = _alerts(sub)[:3]
            assert new["type"] == "new" and new["before"] is None and new["after"]["id"] == first
            assert new["after"]["status"] == "new" and new["after"]["source"] == {"type": "sensor", "id": "s0"}
            assert ack["type"] == "update" and ack["before"]["status"] == "new"
            assert ack["after"]["status"] == "acknowledged"
            assert end["type"] == "end" and end["before"]["status"] == "acknowledged"
            assert end["after"]["status"] == "resolved" and end["after"]["resolve_note"] == "x"

            # A photo-endpoint decision (no face in a blank frame) is on gatewatch/access, no face data.
            gate = httpx.post(f"{base}/api/v1/gates", headers=A, json={"name": "north", "kind": "main"}).json()["id"]
            jpeg = cv2.imencode(".jpg", np.full((240, 320, 3), 128, np.uint8))[1].tobytes()
            r = httpx.post(f"{base}/api/v1/gates/{gate}/access", headers=A, timeout=30,
                           files={"file": ("f.jpg", jpeg, "image/jpeg")})
            assert r.status_code == 200, r.text
            assert sub.wait(lambda: sub.on("gatewatch/access"))
            access = json.loads(sub.on("gatewatch/access")[0])
            assert access == {"gate_id": gate, "camera_id": None, "decision": "deny", "reason": r.json()["reason"],
                              "resident": None, "similarity": None, "event_id": r.json()["event_id"],
                              "at": access["at"]}

            # A fresh subscriber sees "online" retained.
            import paho.mqtt.subscribe as subscribe

            retained = subscribe.simple("gatewatch/available", hostname="127.0.0.1", port=port, retained=True)
            assert retained.payload == b"online" and retained.retain

            # The broker goes down; a burst of alerts is raised; the broker comes back.
            broker.stop()
            started = time.monotonic()
            ids = [_raise(base, key, n) for n in range(1, 201)]
            burst_s = time.monotonic() - started
            queued = Outbox(data_dir / DB_NAME)
            try:
                assert queued.count() >= 200  # waiting in the outbox, not lost
            finally:
                queued.close()
            broker.start()
            back = time.monotonic()

            def all_new() -> bool:
                return len([a for a in _alerts(sub) if a["type"] == "new"]) >= 201

            assert sub.wait(all_new, timeout=40), f"{len(_alerts(sub))} alert messages arrived"
            delivered_s = time.monotonic() - back
            got = [a["after"]["id"] for a in _alerts(sub) if a["type"] == "new"][1:]
            assert got == ids  # all 200, in the order of their ids, none twice
            drained = Outbox(data_dir / DB_NAME)
            try:
                deadline = time.monotonic() + 10
                while drained.count() and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert drained.count() == 0  # every row deleted once acknowledged
            finally:
                drained.close()
            print(f"burst of 200 alerts raised in {burst_s:.2f} s with the broker down; "
                  f"all delivered {delivered_s:.2f} s after it came back")
        # Stopping the service says "offline", retained.
        assert sub.wait(lambda: sub.on("gatewatch/available")[-1:] == ["offline"])
    finally:
        sub.close()
        broker.stop()


@needs_broker
def test_bridge_publishes_camera_status_retained_and_access_decisions(tmp_path: Path) -> None:
    from api.live import AccessNotice
    from api.mqtt import MqttBridge
    from api.settings import Settings

    port = free_port()
    broker = Broker(tmp_path, port)
    broker.start()
    sub = Subscriber(port)
    settings = Settings(data_dir=tmp_path / "data", mqtt_url=f"mqtt://127.0.0.1:{port}", liveness="off")
    settings.data_dir.mkdir()
    bridge = MqttBridge(settings, Outbox(settings.data_dir / DB_NAME))
    try:
        bridge.start()
        bridge.on_camera_status("gate-cam-1", "offline")
        bridge.on_access(AccessNotice(gate_id=3, camera_id="gate-cam-1", decision="unlock", reason="matched",
                                      resident_id=7, resident_name="Li Wei", similarity=0.71, event_id=42,
                                      at="2025-01-01T00:00:00.000Z"))
        assert sub.wait(lambda: sub.on("gatewatch/access") and sub.on("gatewatch/cameras/gate-cam-1/status"))
        assert json.loads(sub.on("gatewatch/access")[0]) == {
            "gate_id": 3, "camera_id": "gate-cam-1", "decision": "unlock", "reason": "matched",
            "resident": {"id": 7, "name": "Li Wei"}, "similarity": 0.71, "event_id": 42,
            "at": "2025-01-01T00:00:00.000Z"}
        import paho.mqtt.subscribe as subscribe

        status = subscribe.simple("gatewatch/cameras/gate-cam-1/status", hostname="127.0.0.1", port=port)
        assert status.payload == b"offline" and status.retain
    finally:
        bridge.stop()
        sub.close()
        broker.stop()


def test_mqtt_url_is_checked() -> None:
    from api.settings import Settings

    for bad in ("http://broker:1883", "mqtt://", "mqtt://host:notaport"):
        with pytest.raises(ValueError):
            Settings(mqtt_url=bad)
    assert Settings(mqtt_url="mqtts://broker.example").mqtt_topic_prefix == "gatewatch"
