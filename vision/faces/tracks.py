"""Face tracks at a gate camera, and one access decision per person per approach.

Detection runs on every frame, but embedding is the expensive step and one good face says more
than twenty blurred ones: a track is embedded only when its face is clearly better than the best
seen so far (or, near its best, after a while, so that votes accumulate for someone standing
still). Each embedding is one vote through the gallery's open-set rule (threshold and margin); the
gate opens when k of the track's last n votes name the same resident, which a single lucky look-
alike frame cannot do. A track decides once; a person who walks away and comes back is a new track
and a new approach. Tracks come from ByteTrack (Roboflow's ``trackers``), fed with our boxes.

With a liveness checker, a track that has named a resident (one a door could open for) is also
checked for a presentation attack (a photo or a screen held up to the camera) on every frame it
is embedded on from then on, and the pooled verdict over the track
(`vision.faces.liveness.track_verdict`) must say "real" before a match unlocks. Fail secure: a track
whose liveness is still unconfirmed when it would have to decide is denied as "spoof", and a
track that liveness calls a spoof is denied as soon as it does. A track nobody matches is denied
as unknown whatever liveness would say, so it is not checked: at a busy gate most faces are
passers-by, and the pair costs twice an embedding (benchmarks/bench_gates).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import supervision as sv
from trackers import ByteTrackTracker

from vision.detections import Detections
from vision.faces.analyzer import FaceAnalyzer
from vision.faces.liveness import LivenessChecker, track_verdict
from vision.faces.quality import assess, score_ceiling
from vision.frames import Frame


class Identity(Protocol):
    """A vote that names someone: what the tracks need of an identification (the gallery's
    `gates.gallery.Match` is one). Whom to name is the caller's business, through `Identify`."""

    @property
    def resident_id(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def similarity(self) -> float: ...


# One result per embedding, in order: the resident it names, or None for nobody.
Identify = Callable[[np.ndarray], Sequence[Identity | None]]


@dataclass(frozen=True)
class GatePolicy:
    """votes_needed of the last `window` votes must agree (k of n). better_by: quality ratio over
    the track's best that counts as "clearly better"; near_best and refresh_s: a face within that
    fraction of the best is re-embedded once refresh_s has passed since the last embedding.
    lost_after_s: a track unseen this long has left (and ByteTrack forgets it about as soon).
    deny_after_s: an undecided track is denied this long after its first vote, not at its first
    unknown votes: someone walking up is unrecognisable far away and must still get their unlock.
    max_embeds_per_frame: a camera embeds (and checks liveness on) at most this many faces per
    frame, tracks with the fewest votes first; the rest wait a frame. A group walking in together
    would otherwise cost one frame several times the camera's frame period and its next frames
    would be lost (benchmarks/bench_gates).
    idle_detect_every: while the last detection found no face, faces are looked for on one frame
    in this many. Most of a gate camera's day is an empty doorway, where detection is a frame's
    only work; someone stepping into view is found at most idle_detect_every - 1 frames later,
    and from then on every frame is detected until the view is empty again."""

    votes_needed: int = 3
    window: int = 5
    min_face_px: float = 40.0
    better_by: float = 1.25
    near_best: float = 0.8
    refresh_s: float = 0.3
    lost_after_s: float = 1.0
    deny_after_s: float = 2.0
    max_embeds_per_frame: int = 2
    idle_detect_every: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.votes_needed <= self.window:
            raise ValueError(f"need 1 <= votes_needed ({self.votes_needed}) <= window ({self.window})")
        if self.max_embeds_per_frame < 1:
            raise ValueError(f"max_embeds_per_frame must be at least 1, got {self.max_embeds_per_frame}")
        if self.idle_detect_every < 1:
            raise ValueError(f"idle_detect_every must be at least 1, got {self.idle_detect_every}")


@dataclass(frozen=True)
class GateDecision:
    """What a gate camera decided for one track. `similarity` is the mean of the agreeing votes,
    `votes` how many agreed and `embedding` the normalised mean of their embeddings (what the gate
    saw of the person, for learning at the gate); `liveness` the median probability of "real" over
    the frames checked (None: no checker); `chip` the aligned face of the track's best embedded
    frame (None if none was embedded)."""

    camera_id: str
    track_id: int
    frame: int
    time: float
    decision: Literal["unlock", "deny"]
    reason: Literal["matched", "unknown", "spoof"]
    match: Identity | None
    similarity: float | None
    liveness: float | None = None
    chip: np.ndarray | None = field(default=None, repr=False, compare=False)
    votes: int = 0
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The access event as `gatewatch analyze --json` prints it, one line per decision."""
        resident = None if self.match is None else {"id": self.match.resident_id, "name": self.match.name}
        return {"type": "access", "frame": self.frame, "time": round(self.time, 3), "track_id": self.track_id,
                "decision": self.decision, "reason": self.reason, "resident": resident,
                "similarity": self.similarity}


@dataclass
class _Track:
    track_id: int
    last_seen: float
    votes: deque[Identity | None]
    vote_embeddings: deque[np.ndarray]
    best_quality: float = 0.0
    best_chip: np.ndarray | None = None
    last_embed: float = float("-inf")
    first_vote: float | None = None
    decided: bool = False
    real: list[float] = field(default_factory=list)  # liveness: probability of "real", per frame checked
    awaiting_liveness: bool = False  # the votes agree; liveness has not said "real" yet


@dataclass(frozen=True)
class EmbedRequest:
    """Chips chosen for embedding in one frame, with the tracks they belong to; the embedding is
    left to the caller so that chips of several cameras can go through the embedder in one batch."""

    frame: Frame
    track_ids: tuple[int, ...]
    chips: np.ndarray
    boxes: np.ndarray  # the faces' boxes in the frame, for the liveness check of those who match


class GateTracker:
    """One camera's face tracks: `select(frame)` detects and tracks, `vote(request, embeddings)`
    turns embeddings into decisions; `step(frame)` does both for a single camera."""

    def __init__(self, camera_id: str, analyzer: FaceAnalyzer, identify: Identify, *,
                 policy: GatePolicy = GatePolicy(), fps: float = 25.0,
                 liveness: LivenessChecker | None = None) -> None:
        self.camera_id = camera_id
        self.analyzer = analyzer
        self.identify = identify
        self.policy = policy
        self.liveness = liveness
        self.tracker = ByteTrackTracker(lost_track_buffer=max(1, round(policy.lost_after_s * 30)), frame_rate=fps)
        self.tracks: dict[int, _Track] = {}
        self.embeddings_computed = 0
        self.detections_run = 0
        self._idle_frames_to_skip = 0

    def step(self, frame: Frame) -> list[GateDecision]:
        request, ended = self.select(frame)
        embeddings = self.analyzer.embedder(request.chips)
        return ended + self.vote(request, embeddings)

    def select(self, frame: Frame) -> tuple[EmbedRequest, list[GateDecision]]:
        """Detect, track, and pick the faces worth embedding; also close tracks that have left."""
        if self._idle_frames_to_skip:
            self._idle_frames_to_skip -= 1
            return EmbedRequest(frame, (), self._no_chips(), _NO_BOXES), self._expire(frame) + self._overdue(frame)
        faces = self.analyzer.detector.detect(frame.image)
        self.detections_run += 1
        if len(faces) == 0:
            self._idle_frames_to_skip = self.policy.idle_detect_every - 1
        now = _clock(frame)
        tracked = self._track(faces, now)
        open_rows = []
        for row, track_id in enumerate(tracked.data["track_id"].tolist()):
            track = self.tracks.get(track_id)
            if track is None:
                window = self.policy.window
                track = self.tracks[track_id] = _Track(track_id, now, deque(maxlen=window), deque(maxlen=window))
            track.last_seen = now
            if not track.decided:
                open_rows.append(row)
        ended = self._expire(frame) + self._overdue(frame)
        if not open_rows:
            return EmbedRequest(frame, (), self._no_chips(), _NO_BOXES), ended
        # Only tracks still deciding cost more than detection and tracking, and of those only faces
        # that could be worth embedding (judged from box and landmarks) are aligned, embedded and
        # checked for liveness, the dearest steps; most frames of a track bring nothing new.
        deciding = tracked[np.array(open_rows)]
        track_ids = deciding.data["track_id"].tolist()
        limits = self.analyzer.quality_limits
        sides = deciding.shorter_side
        big_enough, candidates = [], []
        for row, (track_id, face_px) in enumerate(zip(track_ids, sides.tolist(), strict=True)):
            if face_px < self.policy.min_face_px:
                continue
            big_enough.append(row)
            ceiling = score_ceiling(deciding.boxes[row], deciding.landmarks[row], limits)
            if self._worth_embedding(self.tracks[track_id], ceiling + 1e-4, frame):  # assess rounds to 4 places
                candidates.append(row)
        candidates.sort(key=lambda row: (len(self.tracks[track_ids[row]].votes), -sides[row]))
        candidates = candidates[:self.policy.max_embeds_per_frame]
        chosen: list[int] = []
        chips = self._no_chips()
        if candidates:
            cut = self.analyzer.aligner.chips(frame.image, deciding[np.array(candidates)])
            for i, row in enumerate(candidates):
                track = self.tracks[track_ids[row]]
                quality = assess(deciding.boxes[row], deciding.landmarks[row], cut[i], limits)
                if self._worth_embedding(track, quality.score, frame):
                    if quality.score >= track.best_quality:
                        track.best_quality, track.best_chip = quality.score, cut[i]
                    track.last_embed = now
                    chosen.append(row)
            chips = cut[[candidates.index(row) for row in chosen]]
        # An agreed match waiting for liveness is checked on every frame it is seen, embedded or not.
        waiting = [row for row in big_enough if self.tracks[track_ids[row]].awaiting_liveness]
        ended += self._check_liveness(frame, [track_ids[row] for row in waiting], deciding.boxes[waiting])
        chosen_ids = tuple(track_ids[r] for r in chosen)
        return EmbedRequest(frame, chosen_ids, chips, deciding.boxes[chosen].reshape(-1, 4)), ended

    def vote(self, request: EmbedRequest, embeddings: np.ndarray) -> list[GateDecision]:
        self.embeddings_computed += len(embeddings)
        decisions = []
        matches = self.identify(embeddings) if len(embeddings) else []
        suspects, suspect_boxes = [], []
        for track_id, match, box, embedding in zip(request.track_ids, matches, request.boxes, embeddings,
                                                   strict=True):
            track = self.tracks[track_id]
            if track.decided:  # liveness settled it in select()
                continue
            track.votes.append(match)
            track.vote_embeddings.append(embedding)
            if track.first_vote is None:
                track.first_vote = _clock(request.frame)
            if self.liveness is not None and not track.awaiting_liveness and _names_someone(track):
                suspects.append(track_id)  # checked on this frame below; awaiting ones already were
                suspect_boxes.append(box)
                continue
            decision = self._decide(track, request.frame)
            if decision is not None:
                decisions.append(decision)
        if suspects:
            decisions += self._check_liveness(request.frame, suspects, np.array(suspect_boxes))
        return decisions

    def finish(self, frame: Frame) -> list[GateDecision]:
        """End of input: every undecided track that voted is decided as it stands."""
        decisions = [self._decide(t, frame, ending=True) for t in self.tracks.values()]
        self.tracks.clear()
        return [d for d in decisions if d is not None]

    def _track(self, faces: Detections, timestamp: float) -> Detections:
        if len(faces) == 0 or faces.landmarks is None:
            self.tracker.update(sv.Detections.empty(), timestamp=timestamp)
            return Detections.empty().with_data(track_id=np.zeros(0, np.int64))
        out = self.tracker.update(
            sv.Detections(xyxy=faces.boxes, confidence=faces.scores, data={"row": np.arange(len(faces))}),
            timestamp=timestamp)
        confirmed = out.tracker_id >= 0
        rows = out.data["row"][confirmed]
        # Our own detector boxes and landmarks, not the Kalman-smoothed boxes: the chips need the landmarks.
        return faces[rows].with_data(track_id=out.tracker_id[confirmed].astype(np.int64))

    def _check_liveness(self, frame: Frame, track_ids: Sequence[int], boxes: np.ndarray) -> list[GateDecision]:
        """Liveness of these tracks' faces in this frame; a spoof verdict, or the "real" an agreed
        match was waiting for, settles a track now."""
        if self.liveness is None or not track_ids:
            return []
        real = self.liveness.check(frame.image, boxes).real
        decisions = []
        for track_id, probability in zip(track_ids, real.tolist(), strict=True):
            track = self.tracks[track_id]
            track.real.append(probability)
            decision = self._decide(track, frame)
            if decision is not None:
                decisions.append(decision)
        return decisions

    def _worth_embedding(self, track: _Track, quality: float, frame: Frame) -> bool:
        if track.last_embed == float("-inf") or quality >= track.best_quality * self.policy.better_by:
            return True
        # Someone the window already calls unknown, vote after vote, is not re-embedded at the same
        # quality: only a clearly better face (nearer, turned towards the camera) could change that.
        settled_unknown = len(track.votes) >= self.policy.votes_needed and not _names_someone(track)
        return (not settled_unknown and quality >= track.best_quality * self.policy.near_best
                and _elapsed(track.last_embed, frame) >= self.policy.refresh_s)

    def _expire(self, frame: Frame) -> list[GateDecision]:
        gone = [t for t in self.tracks.values() if _elapsed(t.last_seen, frame) > self.policy.lost_after_s]
        decisions = []
        for track in gone:
            del self.tracks[track.track_id]
            decision = self._decide(track, frame, ending=True)
            if decision is not None:
                decisions.append(decision)
        return decisions

    def _overdue(self, frame: Frame) -> list[GateDecision]:
        """Tracks whose time to decide has come on a frame that brings them no new vote (a stranger
        standing still is not re-embedded, yet is denied deny_after_s after the first vote)."""
        due = [t for t in self.tracks.values() if not t.decided and t.first_vote is not None
               and _elapsed(t.first_vote, frame) >= self.policy.deny_after_s]
        decisions = [self._decide(track, frame) for track in due]
        return [d for d in decisions if d is not None]

    def _decide(self, track: _Track, frame: Frame, ending: bool = False) -> GateDecision | None:
        if track.decided or not (track.votes or track.real):
            return None
        policy = self.policy
        live = "real" if self.liveness is None else track_verdict(track.real)
        liveness = None if self.liveness is None or not track.real else round(float(np.median(track.real)), 4)
        out_of_time = ending or (track.first_vote is not None
                                 and _elapsed(track.first_vote, frame) >= policy.deny_after_s)
        by_resident: dict[int, list[tuple[Identity, np.ndarray]]] = {}
        for match, embedding in zip(track.votes, track.vote_embeddings, strict=True):
            if match is not None:
                by_resident.setdefault(match.resident_id, []).append((match, embedding))
        agreeing = max(by_resident.values(), key=len, default=[])
        matched = len(agreeing) >= policy.votes_needed
        best = max((m for m, _ in agreeing), key=lambda m: m.similarity) if matched else None
        similarity = round(float(np.mean([m.similarity for m, _ in agreeing])), 4) if matched else None
        seen = np.mean([e for _, e in agreeing], axis=0) if matched else None
        if live == "spoof" or (matched and live != "real" and out_of_time):
            verdict: tuple[Literal["unlock", "deny"], Literal["matched", "unknown", "spoof"]] = ("deny", "spoof")
        elif matched and live == "real":
            verdict = ("unlock", "matched")
        elif matched:
            track.awaiting_liveness = True
            return None
        elif out_of_time and track.votes:
            verdict = ("deny", "unknown")
        else:
            return None
        track.decided = True
        return GateDecision(self.camera_id, track.track_id, frame.index, frame.timestamp, *verdict, best, similarity,
                            liveness, track.best_chip, len(agreeing) if matched else 0,
                            None if seen is None else (seen / np.linalg.norm(seen)).astype(np.float32))

    def _no_chips(self) -> np.ndarray:
        size = self.analyzer.aligner.size
        return np.zeros((0, size, size, 3), np.uint8)


def _clock(frame: Frame) -> float:
    """The frame's time to the millisecond, for the tracker and the policy. The policy's periods
    are often whole frame periods (0.3 s is 3 frames at 10 fps) and ByteTrack counts frames from
    time differences, so a track's fate must not hang on how a clock rounded: a file's frame times
    as 0.1 x index and as its stream's own timestamps (0.30000000000000004) made different
    decisions on the same frames."""
    return round(frame.timestamp, 3)


def _elapsed(since: float, frame: Frame) -> float:
    """Seconds from a `_clock` time to the frame's, to the millisecond."""
    return round(_clock(frame) - since, 3)


def _names_someone(track: _Track) -> bool:
    return any(match is not None for match in track.votes)


_NO_BOXES = np.zeros((0, 4), np.float32)


def step_many(trackers: Sequence[GateTracker], frames: Sequence[Frame]) -> list[GateDecision]:
    """One frame per camera, with the chips of all cameras embedded in one batch (same analyzer)."""
    selected = [tracker.select(frame) for tracker, frame in zip(trackers, frames, strict=True)]
    requests = [request for request, _ in selected]
    chips = [r.chips for r in requests if len(r.chips)]
    embedder = trackers[0].analyzer.embedder
    embeddings = embedder(np.concatenate(chips)) if chips else np.zeros((0, embedder.dim), np.float32)
    decisions: list[GateDecision] = []
    start = 0
    for tracker, (request, ended) in zip(trackers, selected, strict=True):
        count = len(request.chips)
        decisions += ended + tracker.vote(request, embeddings[start:start + count])
        start += count
    return decisions
