"""The stack watchdog: when the event loop is late, capture what it is doing.

The loop-lag monitor (apps/instruments.py) measures how late the loop woke, after the
fact, when whatever blocked it has already returned. This watchdog catches it in the
act: a heartbeat on the loop notes each pass, and a thread beside it checks the
heartbeat's age every few milliseconds. Once the heartbeat is overdue by more than
`threshold_ms`, the thread reads the loop thread's current stack with
`sys._current_frames()` (the line the loop is stuck on, file and line, from a stack
captured at run time) and keeps sampling it until the loop comes back. When the next
heartbeat arrives, its lateness is the lag that stall caused, and one JSON line goes
to the output file:

    {"time": 1733093000.123, "lag_ms": 48.7, "samples": [[3, [[file, line, function], ...]], ...]}

`samples` holds each distinct stack seen during the stall, innermost frame first, with
how many times it was seen; a stall shorter than one check, or too short to be caught,
is counted in `missed` of `summary()` instead.

Standard library only and self-contained, so it loads into any app (the probe wrapper
does). It belongs in apps/instruments.py with the other in-server instruments and should
move there once that module has landed on main.

Cost: one thread that wakes every `threshold_ms / 3` to compare two floats (it takes the
GIL for a few microseconds), and a heartbeat callback on the loop every `period_ms`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
from collections import Counter, deque
from types import FrameType
from typing import IO, Any

# Frames kept per stack, innermost first: deep enough for FastAPI's dependency and
# middleware layers between a route and the server loop.
MAX_FRAMES = 60
# Distinct stacks kept per stall: a stall that wanders through more is summarised by these.
MAX_STACKS_PER_STALL = 20

Frame = tuple[str, int, str]  # file, line, function
Stack = tuple[Frame, ...]


def stack_of(frame: FrameType | None, limit: int = MAX_FRAMES) -> Stack:
    """The stack from `frame` outwards, innermost first."""
    frames: list[Frame] = []
    while frame is not None and len(frames) < limit:
        code = frame.f_code
        frames.append((code.co_filename, frame.f_lineno, code.co_name))
        frame = frame.f_back
    return tuple(frames)


class StackWatchdog:
    """Heartbeat on the loop, watcher in a thread; `start()` on the loop, `stop()` at the end."""

    def __init__(self, out_path: str, threshold_ms: float = 25.0, period_ms: float = 10.0) -> None:
        self.out_path = out_path
        self.threshold_s = threshold_ms / 1000
        self.period_s = period_ms / 1000
        self.poll_s = max(0.002, self.threshold_s / 3)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread_id = 0
        # Written by the heartbeat (on the loop), read by the watcher thread: single
        # attribute stores and loads, atomic under the GIL.
        self._beats = 0
        self._last_beat = 0.0
        # Late heartbeats, as (beat number, lateness in s); deque.append is thread-safe.
        self._late: deque[tuple[int, float]] = deque()
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._out: IO[str] | None = None
        self.stalls = 0  # stalls captured with their stacks
        self.missed = 0  # late heartbeats whose stall ended before the watcher saw it
        self.lag_ms_captured = 0.0

    # --- on the loop -----------------------------------------------------------------
    def start(self) -> None:
        """Call from the event loop's thread (e.g. in the app's lifespan)."""
        if self._thread is not None:
            return
        self.loop = asyncio.get_running_loop()
        self.loop_thread_id = threading.get_ident()
        self._out = open(self.out_path, "a")  # noqa: SIM115 - closed in stop()
        self._last_beat = time.monotonic()
        self._handle = self.loop.call_later(self.period_s, self._beat, self._last_beat + self.period_s)
        self._thread = threading.Thread(target=self._watch, name="stack-watchdog", daemon=True)
        self._thread.start()

    def _beat(self, due: float) -> None:
        now = time.monotonic()
        late = now - due
        self._beats += 1
        if late > self.threshold_s:
            self._late.append((self._beats, late))
        self._last_beat = now
        assert self.loop is not None
        self._handle = self.loop.call_later(self.period_s, self._beat, now + self.period_s)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._out is not None:
            with contextlib.suppress(OSError, ValueError):
                self._out.close()
            self._out = None

    # --- in the watcher thread -------------------------------------------------------
    def _watch(self) -> None:
        stall: dict[str, Any] | None = None  # the stall in progress: since which beat, stacks seen
        while not self._stop.wait(self.poll_s):
            beats, last = self._beats, self._last_beat
            if stall is not None and beats != stall["beat"]:
                self._finish(stall)  # the loop came back: its next beat carries the lag
                stall = None
            if time.monotonic() - last - self.period_s > self.threshold_s:
                frame = sys._current_frames().get(self.loop_thread_id)
                if frame is not None and self._beats != beats:  # it beat in between: not stalled after all
                    frame = None
                if frame is not None:
                    if stall is None:  # it began after the last beat: that is when the loop was last seen
                        stall = {"beat": beats, "time": time.time() - (time.monotonic() - last), "stacks": Counter()}
                    stack = stack_of(frame)
                    del frame  # a frame reference keeps the loop thread's locals alive
                    stacks: Counter[Stack] = stall["stacks"]
                    if stack in stacks or len(stacks) < MAX_STACKS_PER_STALL:
                        stacks[stack] += 1
            # Late beats up to here that no stall in progress explains were too short to catch.
            self._take_late(stall["beat"] if stall is not None else beats)
        if stall is not None:
            self._finish(stall)

    def _take_late(self, beat: int) -> float | None:
        """Pop late beats up to `beat`: its lateness, if it was late; earlier ones were
        stalls over before a check saw them. Only this thread pops, only the loop appends."""
        while self._late:
            number, late = self._late[0]
            if number > beat:
                return None
            self._late.popleft()
            if number == beat:
                return late
            self.missed += 1
        return None

    def _finish(self, stall: dict[str, Any]) -> None:
        # The beat after a stall is at least as late as the watcher saw the loop blocked,
        # so it is among the late ones; if it is not, the loop was never stalled.
        lag_s = self._take_late(stall["beat"] + 1)
        if lag_s is None:
            return
        self.stalls += 1
        self.lag_ms_captured += lag_s * 1000
        line = {
            "time": round(stall["time"], 3),
            "lag_ms": round(lag_s * 1000, 2),
            "samples": [[count, [list(f) for f in stack]] for stack, count in stall["stacks"].most_common()],
        }
        if self._out is not None:
            with contextlib.suppress(OSError, ValueError):
                self._out.write(json.dumps(line) + "\n")
                self._out.flush()

    def summary(self) -> dict[str, Any]:
        return {
            "threshold_ms": self.threshold_s * 1000,
            "period_ms": self.period_s * 1000,
            "stalls_captured": self.stalls,
            "stalls_missed": self.missed,
            "lag_ms_captured": round(self.lag_ms_captured, 2),
        }
