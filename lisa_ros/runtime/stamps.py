"""Stamped inputs (depth, camera_info, camera poses) kept for matching to an image by stamp."""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Callable

from .types import NS_PER_S

HISTORY = 16  # depth, camera_info and pose messages kept for matching by stamp


@dataclass
class Stamped:
    """A stamped input kept for matching by stamp (depth, intrinsics, camera pose).

    value: the data, or None until `decode` (called at most once, by `get`) returns it.
    error: why the input is unusable ("" when it is, or may be, usable).
    """

    stamp: int
    frame_id: str = ""
    value: object = None
    decode: Callable[[], object] | None = None
    error: str = ""

    def get(self):
        """The value; raises ValueError with the reason when it is unusable."""
        if self.value is None and not self.error:
            try:
                if self.decode is None:
                    raise ValueError("no data")
                self.value = self.decode()
            except ValueError as error:
                self.error = str(error) or type(error).__name__
            finally:
                self.decode = None
        if self.error:
            raise ValueError(self.error)
        return self.value


class StampCache:
    """The newest few stamped inputs of one kind; thread-safe."""

    def __init__(self, size: int = HISTORY):
        self._items: collections.deque[Stamped] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def put(self, item: Stamped) -> Stamped:
        with self._lock:
            self._items.append(item)
        return item

    def nearest(self, stamp: int) -> Stamped | None:
        """The item whose stamp is closest to `stamp` (the newest on ties); None when empty."""
        with self._lock:
            items = list(self._items)
        best = None
        for item in items:
            if best is None or abs(item.stamp - stamp) <= abs(best.stamp - stamp):
                best = item
        return best

    def within(self, stamp: int, max_skew: float) -> Stamped | None:
        """The item nearest to `stamp` when it is at most `max_skew` seconds away (any distance
        when max_skew is 0); None when there is none."""
        item = self.nearest(stamp)
        if item is None or (max_skew > 0 and abs(item.stamp - stamp) > max_skew * NS_PER_S):
            return None
        return item

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def awaited(self, stamp: int, max_skew: float) -> bool:
        """True when items come in but none is within `max_skew` seconds of `stamp` and none
        is newer: the one for `stamp` may still be on its way (e.g. a depth image whose
        subscription callback runs just after the colour image's)."""
        with self._lock:
            items = list(self._items)
        if not items or max_skew <= 0:
            return False
        near = any(abs(item.stamp - stamp) <= max_skew * NS_PER_S for item in items)
        return not near and max(item.stamp for item in items) < stamp


def skew_error(what: str, item: Stamped, stamp: int, max_skew: float) -> str:
    """Why `item` is too far from `stamp` (seconds apart > max_skew > 0), or ""."""
    skew = abs(item.stamp - int(stamp)) / NS_PER_S
    if max_skew > 0 and skew > max_skew:
        return f"the nearest {what} is {skew:.3f} s apart from the image (max_depth_skew is {max_skew:g} s)"
    return ""
