"""Camera ingestion: files, a real RTSP stream that dies and comes back, slow consumers, bad sources.

The RTSP source is ffmpeg (RTP out of a looping file) behind a minimal RTSP server written here:
ffmpeg cannot serve RTSP readers itself, and no RTSP server ships in Debian that we can rely on.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SHARED_DATA

from vision.streams.readers import Backoff, CameraEvent, CameraStream, SourceError

VIDEO = SHARED_DATA / "video" / "facenetpt_video.mp4"


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_video(path: Path, frames: int, fps: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (160, 120))
    for i in range(frames):
        image = np.full((120, 160, 3), 40, np.uint8)
        cv2.putText(image, str(i), (20, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
        writer.write(image)
    writer.release()
    return path


class _Events:
    def __init__(self) -> None:
        self.items: list[CameraEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: CameraEvent) -> None:
        with self._cond:
            self.items.append(event)
            self._cond.notify_all()

    def wait_for(self, kind: str, count: int = 1, timeout_s: float = 20.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: sum(e.type == kind for e in self.items) >= count, timeout_s)


class RtspRelay:
    """OPTIONS/DESCRIBE/SETUP/PLAY over TCP; RTP from ffmpeg (UDP) relayed interleaved to players."""

    def __init__(self, video: Path, port: int, tmp: Path) -> None:
        self.port = port
        rtp_port = _free_port(socket.SOCK_DGRAM)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", rtp_port))
        self.udp.settimeout(0.2)
        sdp = tmp / f"stream-{port}-{rtp_port}.sdp"
        self.ffmpeg = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(video),
             "-an", "-vf", "scale=320:-2", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
             "-g", "5", "-bf", "0", "-f", "rtp", "-sdp_file", str(sdp), f"rtp://127.0.0.1:{rtp_port}"],
            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not (sdp.exists() and "m=video" in sdp.read_text()):
            assert time.monotonic() < deadline, "ffmpeg wrote no SDP"
            time.sleep(0.05)
        self.sdp = sdp.read_text().replace("\r\n", "\n").strip() + "\na=control:streamid=0\n"
        self.server = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.server.settimeout(0.2)
        self.players: list[socket.socket] = []
        self.running = True
        self.threads = [threading.Thread(target=self._accept, daemon=True),
                        threading.Thread(target=self._relay, daemon=True)]
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.running = False
        self.ffmpeg.kill()
        self.ffmpeg.wait()
        for t in self.threads:
            t.join()
        for s in [self.server, self.udp, *self.players]:
            s.close()

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            while self.running:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buffer += chunk
                while buffer:
                    if buffer[:1] == b"$":  # interleaved RTCP from the player
                        if len(buffer) < 4 or len(buffer) < 4 + int.from_bytes(buffer[2:4], "big"):
                            break
                        buffer = buffer[4 + int.from_bytes(buffer[2:4], "big"):]
                        continue
                    head, sep, rest = buffer.partition(b"\r\n\r\n")
                    if not sep:
                        break
                    buffer = rest
                    self._answer(conn, head.decode())
        except OSError:
            return

    def _answer(self, conn: socket.socket, request: str) -> None:
        lines = request.split("\r\n")
        method, url = lines[0].split(" ")[:2]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        reply = [f"CSeq: {headers.get('cseq', '0')}"]
        body = ""
        if method == "OPTIONS":
            reply.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
        elif method == "DESCRIBE":
            body = self.sdp.replace("\n", "\r\n")
            reply += ["Content-Type: application/sdp", f"Content-Base: {url}/"]
        elif method == "SETUP":
            reply += ["Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: 4242"]
        elif method == "PLAY":
            reply.append("Session: 4242")
        message = "RTSP/1.0 200 OK\r\n" + "\r\n".join(reply) + f"\r\nContent-Length: {len(body)}\r\n\r\n" + body
        conn.sendall(message.encode())
        if method == "PLAY":
            self.players.append(conn)

    def _relay(self) -> None:
        while self.running:
            try:
                packet = self.udp.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            for player in list(self.players):
                try:
                    player.sendall(b"$\x00" + len(packet).to_bytes(2, "big") + packet)
                except OSError:
                    self.players.remove(player)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (apt-get install ffmpeg)")
@pytest.mark.skipif(not VIDEO.is_file(), reason="shared video not available")
def test_rtsp_stream_goes_offline_and_recovers(tmp_path: Path) -> None:
    port = _free_port()
    relay = RtspRelay(VIDEO, port, tmp_path)
    events = _Events()
    stream = CameraStream("gate-1", f"rtsp://127.0.0.1:{port}/live", on_event=events,
                          backoff=Backoff(initial_s=0.2, max_s=1.0), read_timeout_s=3.0).start()
    try:
        assert events.wait_for("camera_online"), events.items
        first = stream.read(timeout_s=10)
        assert first is not None and first.camera_id == "gate-1" and first.image.shape[1] == 320
        relay.stop()
        assert events.wait_for("camera_offline"), events.items
        assert stream.online is False
        relay = RtspRelay(VIDEO, port, tmp_path)
        assert events.wait_for("camera_online", count=2), events.items
        later = stream.read(timeout_s=10)
        assert later is not None and later.index > first.index
        assert [e.type for e in events.items] == ["camera_online", "camera_offline", "camera_online"]
        assert stream.disconnects == 1 and stream.fps > 0 and stream.decode_ms > 0
    finally:
        stream.stop()
        relay.stop()


def test_file_source_plays_every_frame_then_ends(tmp_path: Path) -> None:
    video = _write_video(tmp_path / "clip.mp4", frames=30, fps=30)
    events = _Events()
    frames = []
    with CameraStream("file", str(video), on_event=events) as stream:
        while (frame := stream.read(timeout_s=5)) is not None:
            frames.append(frame)
    assert [f.index for f in frames] == list(range(30))
    assert frames[-1].timestamp == pytest.approx(29 / 30, abs=0.02)
    assert stream.ended and stream.frames_dropped == 0 and stream.fps == pytest.approx(30, rel=0.3)
    assert [(e.type, e.reason) for e in events.items] == [("camera_online", f"reading {video}"),
                                                         ("camera_offline", "end of file")]


def test_slow_consumer_gets_newest_frame_without_lag(tmp_path: Path) -> None:
    video = _write_video(tmp_path / "clip.mp4", frames=100, fps=50)
    got = []
    with CameraStream("file", str(video)) as stream:
        while (frame := stream.read(timeout_s=5)) is not None:
            # The frame handed over is the newest decoded one, whatever the consumer's pace.
            assert frame.index >= stream.frames_decoded - 2
            got.append(frame.index)
            time.sleep(0.2)
    assert 5 <= len(got) <= 20
    assert got == sorted(set(got))
    assert stream.frames_dropped == 100 - len(got)


def test_missing_file_is_a_clear_error() -> None:
    with pytest.raises(SourceError, match="does not exist"):
        CameraStream("cam", "/nonexistent/gate.mp4")


def test_unreachable_camera_reports_offline_and_keeps_trying() -> None:
    events = _Events()
    stream = CameraStream("cam", f"rtsp://127.0.0.1:{_free_port()}/live", on_event=events,
                          backoff=Backoff(initial_s=0.1, max_s=0.2), open_timeout_s=1.0).start()
    try:
        assert events.wait_for("camera_offline", timeout_s=10)
        assert "cannot open" in events.items[0].reason
        assert stream.read(timeout_s=0.5) is None
        assert not stream.ended  # still retrying: the camera may come back
    finally:
        stream.stop()
    assert len(events.items) == 1  # reported once, not once per retry


def test_unreadable_file_reports_offline_without_crashing(tmp_path: Path) -> None:
    bogus = tmp_path / "gate.mp4"
    bogus.write_text("not a video")
    events = _Events()
    with CameraStream("cam", str(bogus), on_event=events) as stream:
        assert stream.read(timeout_s=5) is None
    assert stream.ended
    assert [e.type for e in events.items] == ["camera_offline"]
