"""Capture-stamp synchronisation of a policy's inputs: the freshest complete set, once.

Each source (one per camera, `joint_states`, optionally `scene`) keeps a short ring of
(capture stamp, payload), sorted by stamp. `latest_complete(tolerance_ns)` looks for the freshest
set that holds one message of every source, chosen around a camera frame (the *reference*): for
each source the message closest in stamp to it, accepted when every stamp lies within the
tolerance of the set's newest camera frame. The set is stamped with its **oldest** camera frame
(DESIGN §3: a message derived from an observation keeps that observation's capture stamp, and
the oldest frame is the one whose age bounds the whole observation's).

Freshness comes first: with a tolerance longer than the frame period, a new frame whose partner
from another camera is still in flight is paired with that camera's previous frame. For
hardware-synchronised cameras, set the tolerance below the frame period to pair frames of one
trigger only.

A returned set is consumed: the next one must have a strictly newer newest camera frame, so a
policy that runs back-to-back never answers the same frame twice and never goes back in time.
Thread-safe: middleware callbacks add, a worker thread takes.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

PayloadT = TypeVar("PayloadT")

DEFAULT_HISTORY = 8
"""Messages kept per source: 8 frames at 30 Hz are ~270 ms, longer than any tolerance we use."""


@dataclass(frozen=True)
class Stamped(Generic[PayloadT]):
    """One message of a source: its capture stamp [ns, system clock] and its payload."""

    stamp_ns: int
    payload: PayloadT


@dataclass(frozen=True)
class SyncedSet(Generic[PayloadT]):
    """One synchronised set of messages.

    Attributes:
        stamp_ns: capture stamp of the oldest camera frame in the set (the observation's stamp).
        reference_ns: capture stamp of the newest camera frame in the set.
        messages: source name -> the message chosen for it.
        spread_ns: newest minus oldest stamp over all the set's messages.
    """

    stamp_ns: int
    reference_ns: int
    messages: Mapping[str, Stamped[PayloadT]]
    spread_ns: int


@dataclass(frozen=True)
class SyncCounters:
    """What the synchroniser has seen and done since start (or reset).

    Attributes:
        received: messages added, per source.
        out_of_order: messages older than the newest of their source (inserted in order; a
            duplicate stamp replaces the previous message).
        sets: sets returned.
        frames_skipped: camera frames never used: older than a returned set's newest frame and
            not part of it (normal when cameras are faster than inference).
        unsynchronised: calls that found fresh camera frames and every source present, but no
            set within the tolerance.
        incomplete: calls that found fresh camera frames but a source with no message at all.
    """

    received: Mapping[str, int]
    out_of_order: int
    sets: int
    frames_skipped: int
    unsynchronised: int
    incomplete: int


class ObservationSync(Generic[PayloadT]):
    """Per-source rings of stamped messages and the matching of complete, fresh sets."""

    def __init__(
        self,
        cameras: Sequence[str],
        others: Sequence[str] = ("joint_states",),
        history: int | Mapping[str, int] = DEFAULT_HISTORY,
    ) -> None:
        """Set up the sources.

        Args:
            cameras: camera sources; at least one. Their frames are the set's references.
            others: further required sources (joint states, a MolmoThink scene).
            history: messages kept per source, one number for all or per source name (a
                200 Hz joint state needs a longer ring than a 30 Hz camera to cover the same
                time); sources not named get DEFAULT_HISTORY.
        """
        names = [*cameras, *others]
        if not cameras:
            raise ValueError("ObservationSync needs at least one camera source")
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        sizes = {name: self._history(history, name) for name in names}
        bad = {name: size for name, size in sizes.items() if size < 1}
        if bad:
            raise ValueError(f"history must be >= 1 message per source, got {bad}")
        self.cameras: tuple[str, ...] = tuple(cameras)
        self.sources: tuple[str, ...] = tuple(names)
        self._sizes = sizes
        self._lock = threading.Lock()
        self._stamps: dict[str, list[int]] = {}
        self._payloads: dict[str, list[PayloadT]] = {}
        self.reset()

    @staticmethod
    def _history(history: int | Mapping[str, int], name: str) -> int:
        if isinstance(history, int):
            return history
        return int(history.get(name, DEFAULT_HISTORY))

    def reset(self) -> None:
        """Forget every message, the last returned set and the counters."""
        with self._lock:
            self._stamps = {name: [] for name in self.sources}
            self._payloads = {name: [] for name in self.sources}
            self._used_ns: int | None = None
            self._received = dict.fromkeys(self.sources, 0)
            self._out_of_order = 0
            self._sets = 0
            self._frames_skipped = 0
            self._unsynchronised = 0
            self._incomplete = 0

    def add(self, source: str, stamp_ns: int, payload: PayloadT) -> None:
        """Add a message of `source` captured at `stamp_ns`.

        Raises:
            KeyError: `source` is not one of the configured sources.
        """
        if source not in self._sizes:
            raise KeyError(f"unknown source {source!r}; sources: {', '.join(self.sources)}")
        with self._lock:
            stamps, payloads = self._stamps[source], self._payloads[source]
            self._received[source] += 1
            if stamps and stamp_ns <= stamps[-1]:
                self._out_of_order += 1
                index = bisect.bisect_left(stamps, stamp_ns)
                if index < len(stamps) and stamps[index] == stamp_ns:
                    payloads[index] = payload
                    return
                stamps.insert(index, stamp_ns)
                payloads.insert(index, payload)
            else:
                stamps.append(stamp_ns)
                payloads.append(payload)
            if len(stamps) > self._sizes[source]:
                del stamps[0], payloads[0]

    def missing(self) -> tuple[str, ...]:
        """Sources that have no message at all."""
        with self._lock:
            return tuple(name for name in self.sources if not self._stamps[name])

    def has_fresh_frame(self) -> bool:
        """True when some camera frame is newer than the last returned set's newest frame."""
        with self._lock:
            return bool(self._fresh_references())

    def latest_complete(self, tolerance_ns: int) -> SyncedSet[PayloadT] | None:
        """Take the freshest complete set not returned before, or None.

        Candidate references are the camera frames newer than the last returned set's newest
        frame, newest first. For each, every source contributes the message closest in stamp
        to it; the set is accepted when all its stamps lie within `tolerance_ns` of its newest
        camera frame and that frame is fresh. An accepted set is consumed (see module doc).
        """
        if tolerance_ns < 0:
            raise ValueError(f"tolerance_ns must be >= 0, got {tolerance_ns}")
        with self._lock:
            references = self._fresh_references()
            if not references:
                return None
            if any(not self._stamps[name] for name in self.sources):
                self._incomplete += 1
                return None
            for reference in references:
                chosen = {name: self._closest(name, reference) for name in self.sources}
                newest = max(chosen[name][0] for name in self.cameras)
                if self._used_ns is not None and newest <= self._used_ns:
                    continue
                if all(abs(stamp - newest) <= tolerance_ns for stamp, _ in chosen.values()):
                    return self._take(chosen, newest)
            self._unsynchronised += 1
            return None

    def counters(self) -> SyncCounters:
        with self._lock:
            return SyncCounters(
                received=dict(self._received),
                out_of_order=self._out_of_order,
                sets=self._sets,
                frames_skipped=self._frames_skipped,
                unsynchronised=self._unsynchronised,
                incomplete=self._incomplete,
            )

    # -- under the lock ----------------------------------------------------------------------

    def _fresh_references(self) -> list[int]:
        stamps: set[int] = set()
        for name in self.cameras:
            stamps.update(self._fresh(self._stamps[name]))
        return sorted(stamps, reverse=True)

    def _fresh(self, stamps: Iterable[int]) -> list[int]:
        used = self._used_ns
        return [stamp for stamp in stamps if used is None or stamp > used]

    def _closest(self, source: str, reference_ns: int) -> tuple[int, PayloadT]:
        stamps = self._stamps[source]
        index = bisect.bisect_left(stamps, reference_ns)
        candidates = [i for i in (index - 1, index) if 0 <= i < len(stamps)]
        best = min(candidates, key=lambda i: abs(stamps[i] - reference_ns))
        return stamps[best], self._payloads[source][best]

    def _take(
        self, chosen: Mapping[str, tuple[int, PayloadT]], newest: int
    ) -> SyncedSet[PayloadT]:
        camera_stamps = [chosen[name][0] for name in self.cameras]
        all_stamps = [stamp for stamp, _ in chosen.values()]
        for name in self.cameras:
            fresh = self._fresh(self._stamps[name])
            self._frames_skipped += sum(
                1 for stamp in fresh if stamp < newest and stamp != chosen[name][0]
            )
        self._used_ns = newest
        self._sets += 1
        return SyncedSet(
            stamp_ns=min(camera_stamps),
            reference_ns=newest,
            messages={name: Stamped(stamp, payload) for name, (stamp, payload) in chosen.items()},
            spread_ns=max(all_stamps) - min(all_stamps),
        )
