"""Chain latency per observation, keyed by its capture stamp (DESIGN §3: stamps travel).

One observation's path through the graph, every point an arrival time on the monitor's clock
except the capture stamp (the camera's clock, mapped to the system clock):

    capture -> camera frame arrives -> /think/scene with that stamp arrives
            -> policy starts (chunk arrival - the policy trace's total_ms)
            -> /policy/action_chunk with that stamp arrives
            -> the driver first applies a row of that chunk (its diagnostics' applied_since_ns)

The last hop is the reaction latency that matters. Only stamps and traces are used (no side
channel), so this works across machines as long as the clocks agree; an age below zero says they
do not and is counted (`negative`). Pure: arrival times are passed in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

_MS = 1e6


@dataclass
class Chain:
    """What is known so far about one observation (times in ns; None = not seen yet)."""

    capture_ns: int
    camera_arrival_ns: dict[str, int] = field(default_factory=dict)
    scene_arrival_ns: int | None = None
    chunk_arrival_ns: int | None = None
    policy_total_ms: float | None = None
    applied_ns: int | None = None

    def _age_ms(self, at_ns: int | None) -> float | None:
        return None if at_ns is None else (at_ns - self.capture_ns) / _MS

    def camera_age_ms(self, camera: str) -> float | None:
        return self._age_ms(self.camera_arrival_ns.get(camera))

    @property
    def scene_age_ms(self) -> float | None:
        return self._age_ms(self.scene_arrival_ns)

    @property
    def chunk_age_ms(self) -> float | None:
        """Capture -> the chunk answering it arrives."""
        return self._age_ms(self.chunk_arrival_ns)

    @property
    def policy_start_ns(self) -> int | None:
        if self.chunk_arrival_ns is None or self.policy_total_ms is None:
            return None
        return self.chunk_arrival_ns - round(self.policy_total_ms * _MS)

    @property
    def policy_wait_ms(self) -> float | None:
        """Capture -> the policy starts on it (queueing and synchronisation)."""
        return self._age_ms(self.policy_start_ns)

    @property
    def reaction_ms(self) -> float | None:
        """Capture -> the driver first applies a row of the chunk answering it."""
        return self._age_ms(self.applied_ns)

    def stages_ms(self) -> dict[str, float]:
        """Every hop known so far, as milliseconds after the capture."""
        stages = {
            f"camera/{camera}": (at_ns - self.capture_ns) / _MS
            for camera, at_ns in self.camera_arrival_ns.items()
        }
        for name, value in (
            ("scene", self.scene_age_ms),
            ("policy_start", self.policy_wait_ms),
            ("chunk", self.chunk_age_ms),
            ("reaction", self.reaction_ms),
        ):
            if value is not None:
                stages[name] = value
        return stages


class ChainTracker:
    """Builds `Chain`s from arrivals; keeps the newest `capacity` observations."""

    def __init__(self, capacity: int = 512) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._chains: OrderedDict[int, Chain] = OrderedDict()
        self._last_chunk: Chain | None = None
        self._traced: Chain | None = None
        self.unmatched_applied = 0  # applied chunks whose observation was never seen

    def _chain(self, capture_ns: int) -> Chain:
        chain = self._chains.get(capture_ns)
        if chain is None:
            chain = self._chains[capture_ns] = Chain(capture_ns)
            if len(self._chains) > self.capacity:
                self._chains.popitem(last=False)
        return chain

    def get(self, capture_ns: int) -> Chain | None:
        return self._chains.get(capture_ns)

    def on_camera(self, camera: str, capture_ns: int, arrival_ns: int) -> Chain:
        chain = self._chain(capture_ns)
        chain.camera_arrival_ns.setdefault(camera, arrival_ns)
        return chain

    def on_scene(self, capture_ns: int, arrival_ns: int) -> Chain:
        chain = self._chain(capture_ns)
        if chain.scene_arrival_ns is None:
            chain.scene_arrival_ns = arrival_ns
        return chain

    def on_chunk(self, capture_ns: int, arrival_ns: int) -> Chain:
        chain = self._chain(capture_ns)
        if chain.chunk_arrival_ns is None:
            chain.chunk_arrival_ns = arrival_ns
        self._last_chunk = chain
        return chain

    def on_policy_trace(self, total_ms: float) -> Chain | None:
        """The policy's latest trace (its 1 Hz diagnostics): it belongs to the latest chunk.

        The policy publishes the chunk before its diagnostics can report that inference, so
        the newest chunk seen is the one the trace timed. Returns that chain the first time.
        """
        chain = self._last_chunk
        if chain is None or chain is self._traced or chain.policy_total_ms is not None:
            return None
        chain.policy_total_ms = total_ms
        self._traced = chain
        return chain

    def on_applied(self, capture_ns: int, applied_ns: int) -> Chain | None:
        """The driver applies the chunk answering `capture_ns` since `applied_ns`.

        Returns the chain the first time this chunk is reported applied, else None.
        """
        chain = self._chains.get(capture_ns)
        if chain is None:
            self.unmatched_applied += 1
            chain = self._chain(capture_ns)
        if chain.applied_ns is not None:
            return None
        chain.applied_ns = applied_ns
        return chain
