"""A ROS-free, time-interpolating transform tree (the core of ``tf2_ros.Buffer``).

Frames form a tree: every child frame has one parent, set by ``set_transform``.
Each link keeps a time-ordered history (pruned to ``cache_time_s`` behind its
newest entry); static links hold one transform valid at all times.  ``lookup``
chains the links from ``source_frame`` up to the common ancestor and down to
``target_frame``; between two bracketing stamps the translation is interpolated
linearly and the rotation by spherical linear interpolation (slerp), as tf2
does.  A stamp outside a link's history is an ``ExtrapolationError`` (no
extrapolation, also as tf2), an unknown or unconnected frame an
``UnknownFrameError``; both are ``LookupError``s whose message names the
frames, the requested stamp and the available range.

Conventions: ``T_parent_child`` maps points from the child frame into the
parent frame (``p_parent = T_parent_child @ p_child``), i.e. the pose of the
child in the parent, exactly what a ``geometry_msgs/TransformStamped`` with
``header.frame_id = parent`` and ``child_frame_id = child`` carries.
``lookup(target, source)`` returns ``T_target_source``.  Stamps are integer
nanoseconds; ``stamp_ns=None`` asks for the latest time common to every
dynamic link of the chain (tf2's "time zero").
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ExtrapolationError",
    "TransformBuffer",
    "UnknownFrameError",
    "matrix_from_translation_quaternion",
    "quaternion_from_matrix",
    "slerp",
]


class UnknownFrameError(LookupError):
    """A frame was never set, or the two frames are not connected."""


class ExtrapolationError(LookupError):
    """The requested stamp lies outside the stored history of a link."""


def _format_stamp(stamp_ns: int) -> str:
    return f"{stamp_ns} ns ({stamp_ns * 1e-9:.6f} s)"


def quaternion_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(x, y, z, w)`` of a 3x3 rotation matrix (Shepperd's method), ``w >= 0``."""
    r = np.asarray(rotation, dtype=np.float64)
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    if trace > 0.0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = np.array([(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s])
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = np.array([0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s])
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = np.array([(r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s])
    else:
        s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = np.array([(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s, (r[1, 0] - r[0, 1]) / s])
    q /= np.linalg.norm(q)
    return -q if q[3] < 0.0 else q


def _rotation_from_quaternion(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_from_translation_quaternion(translation, quaternion_xyzw) -> np.ndarray:
    """4x4 transform from a translation ``(x, y, z)`` and a quaternion ``(x, y, z, w)`` (normalised here)."""
    q = np.asarray(quaternion_xyzw, dtype=np.float64).reshape(4)
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"quaternion {q.tolist()} has no direction (norm {norm})")
    t = np.asarray(translation, dtype=np.float64).reshape(3)
    if not np.all(np.isfinite(t)):
        raise ValueError(f"translation {t.tolist()} is not finite")
    matrix = np.eye(4)
    matrix[:3, :3] = _rotation_from_quaternion(q / norm)
    matrix[:3, 3] = t
    return matrix


def slerp(q0: np.ndarray, q1: np.ndarray, fraction: float) -> np.ndarray:
    """Spherical linear interpolation of unit quaternions ``(x, y, z, w)`` along the shorter arc."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:  # q and -q are the same rotation: take the shorter arc
        q1 = -q1
        dot = -dot
    if dot > 0.9995:  # nearly parallel: normalised lerp is exact to float precision
        q = q0 + fraction * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(min(dot, 1.0))
    sin_theta = np.sin(theta)
    return (np.sin((1.0 - fraction) * theta) * q0 + np.sin(fraction * theta) * q1) / sin_theta


@dataclass
class _Link:
    """The history of one parent->child link."""

    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)
    translations: list[np.ndarray] = field(default_factory=list)
    quaternions: list[np.ndarray] = field(default_factory=list)

    def time_range(self) -> tuple[int, int]:
        return self.stamps[0], self.stamps[-1]

    def insert(self, stamp_ns: int, translation: np.ndarray, quaternion: np.ndarray, cache_time_ns: int) -> None:
        if self.static:
            self.stamps, self.translations, self.quaternions = [stamp_ns], [translation], [quaternion]
            return
        index = bisect.bisect_left(self.stamps, stamp_ns)
        if index < len(self.stamps) and self.stamps[index] == stamp_ns:  # same stamp: newest value wins
            self.translations[index], self.quaternions[index] = translation, quaternion
        else:
            self.stamps.insert(index, stamp_ns)
            self.translations.insert(index, translation)
            self.quaternions.insert(index, quaternion)
        oldest_kept = bisect.bisect_left(self.stamps, self.stamps[-1] - cache_time_ns)
        if oldest_kept > 0:
            del self.stamps[:oldest_kept], self.translations[:oldest_kept], self.quaternions[:oldest_kept]

    def at(self, stamp_ns: int, child: str) -> np.ndarray:
        """``T_parent_child`` at ``stamp_ns`` (interpolated), or ``ExtrapolationError``."""
        if self.static:
            return matrix_from_translation_quaternion(self.translations[0], self.quaternions[0])
        first, last = self.time_range()
        if stamp_ns < first or stamp_ns > last:
            side = "before the oldest" if stamp_ns < first else "after the newest"
            raise ExtrapolationError(
                f"cannot look up '{self.parent}' -> '{child}' at {_format_stamp(stamp_ns)}: it is {side} "
                f"transform stored for this link (available {_format_stamp(first)} .. {_format_stamp(last)}, "
                f"{len(self.stamps)} transform(s))"
            )
        index = bisect.bisect_left(self.stamps, stamp_ns)
        if self.stamps[index] == stamp_ns:
            return matrix_from_translation_quaternion(self.translations[index], self.quaternions[index])
        t0, t1 = self.stamps[index - 1], self.stamps[index]
        fraction = (stamp_ns - t0) / (t1 - t0)
        translation = (1.0 - fraction) * self.translations[index - 1] + fraction * self.translations[index]
        quaternion = slerp(self.quaternions[index - 1], self.quaternions[index], fraction)
        return matrix_from_translation_quaternion(translation, quaternion)


def _as_rigid(transform: np.ndarray, parent: str, child: str) -> tuple[np.ndarray, np.ndarray]:
    matrix = np.asarray(transform, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise ValueError(f"transform '{parent}' -> '{child}' must be 4x4, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"transform '{parent}' -> '{child}' has non-finite entries")
    rotation = matrix[:3, :3]
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4) or np.linalg.det(rotation) < 0.0:
        raise ValueError(f"transform '{parent}' -> '{child}' has a rotation block that is not a proper rotation")
    return matrix[:3, 3].copy(), quaternion_from_matrix(rotation)


class TransformBuffer:
    """A tree of time-stamped transforms with tf2's lookup semantics, without ROS.

    Thread-safe: ``set_transform`` may be called from subscription callbacks while
    another thread calls ``lookup``.
    """

    def __init__(self, cache_time_s: float = 10.0) -> None:
        if not cache_time_s > 0.0:
            raise ValueError(f"cache_time_s must be positive, got {cache_time_s}")
        self.cache_time_ns = int(round(cache_time_s * 1e9))
        self._links: dict[str, _Link] = {}  # child frame -> link to its parent
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ writing
    def set_transform(
        self, parent: str, child: str, T_parent_child: np.ndarray, stamp_ns: int, static: bool = False
    ) -> None:
        """Store the pose of ``child`` in ``parent`` at ``stamp_ns`` (static: valid at all times).

        A child gets a new parent only by a new transform naming it; its old
        history is dropped then (a child has one parent at a time).
        """
        parent, child = self._check_frame(parent), self._check_frame(child)
        if parent == child:
            raise ValueError(f"transform from frame '{parent}' to itself")
        translation, quaternion = _as_rigid(T_parent_child, parent, child)
        with self._lock:
            ancestor = parent
            while ancestor in self._links:  # adding parent -> child must not close a loop
                ancestor = self._links[ancestor].parent
                if ancestor == child:
                    raise ValueError(f"transform '{parent}' -> '{child}' would make a loop: "
                                     f"'{child}' is an ancestor of '{parent}'")
            link = self._links.get(child)
            if link is None or link.parent != parent or link.static != static:
                link = _Link(parent=parent, static=static)
                self._links[child] = link
            link.insert(int(stamp_ns), translation, quaternion, self.cache_time_ns)

    def set_transform_tq(
        self, parent: str, child: str, translation, quaternion_xyzw, stamp_ns: int, static: bool = False
    ) -> None:
        """``set_transform`` from a translation and a quaternion ``(x, y, z, w)`` (the TF message fields)."""
        matrix = matrix_from_translation_quaternion(translation, quaternion_xyzw)
        self.set_transform(parent, child, matrix, stamp_ns, static)

    def clear(self) -> None:
        with self._lock:
            self._links.clear()

    # ------------------------------------------------------------------ reading
    def frames(self) -> list[str]:
        """Every frame known to the buffer (parents and children), sorted."""
        with self._lock:
            names = set(self._links) | {link.parent for link in self._links.values()}
        return sorted(names)

    def parent_of(self, frame: str) -> str | None:
        with self._lock:
            link = self._links.get(frame)
            return None if link is None else link.parent

    def can_transform(self, target_frame: str, source_frame: str, stamp_ns: int | None) -> bool:
        try:
            self.lookup(target_frame, source_frame, stamp_ns)
        except LookupError:
            return False
        return True

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int | None) -> np.ndarray:
        """``T_target_source`` at ``stamp_ns`` (``None``: latest time common to the chain's dynamic links)."""
        with self._lock:
            source_chain = self._chain_to_root(source_frame, target_frame, source_frame)
            target_chain = self._chain_to_root(target_frame, target_frame, source_frame)
            if source_chain[-1] != target_chain[-1]:
                raise UnknownFrameError(
                    f"frames '{target_frame}' and '{source_frame}' are not connected: '{source_frame}' has root "
                    f"'{source_chain[-1]}', '{target_frame}' has root '{target_chain[-1]}' "
                    f"(known frames: {', '.join(self._known_frames())})"
                )
            # Drop the shared part of the two chains above the common ancestor.
            while len(source_chain) > 1 and len(target_chain) > 1 and source_chain[-2] == target_chain[-2]:
                source_chain.pop()
                target_chain.pop()
            links = [(child, self._links[child]) for child in source_chain[:-1] + target_chain[:-1]]
            if stamp_ns is None:
                stamp_ns = self._latest_common_stamp(links, target_frame, source_frame)
            stamp_ns = int(stamp_ns)
            T_common_source = np.eye(4)
            for child in reversed(source_chain[:-1]):  # from the ancestor down to the source
                T_common_source = T_common_source @ self._links[child].at(stamp_ns, child)
            T_common_target = np.eye(4)
            for child in reversed(target_chain[:-1]):
                T_common_target = T_common_target @ self._links[child].at(stamp_ns, child)
        return _invert(T_common_target) @ T_common_source

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _check_frame(frame: str) -> str:
        if not isinstance(frame, str) or not frame.strip("/"):
            raise ValueError(f"frame names must be non-empty strings, got {frame!r}")
        return frame.lstrip("/")  # tf2 ignores a leading slash

    def _known_frames(self) -> list[str]:
        return sorted(set(self._links) | {link.parent for link in self._links.values()}) or ["none"]

    def _chain_to_root(self, frame: str, target_frame: str, source_frame: str) -> list[str]:
        frame = self._check_frame(frame)
        known_parents = {link.parent for link in self._links.values()}
        if frame not in self._links and frame not in known_parents:
            raise UnknownFrameError(
                f"cannot look up '{target_frame}' -> '{source_frame}': frame '{frame}' does not exist "
                f"(known frames: {', '.join(self._known_frames())})"
            )
        chain = [frame]
        while chain[-1] in self._links:
            chain.append(self._links[chain[-1]].parent)
        return chain

    def _latest_common_stamp(self, links: list[tuple[str, _Link]], target_frame: str, source_frame: str) -> int:
        dynamic = [(child, link) for child, link in links if not link.static]
        if not dynamic:
            return 0
        newest_common = min(link.stamps[-1] for _, link in dynamic)
        oldest_common = max(link.stamps[0] for _, link in dynamic)
        if newest_common < oldest_common:
            ranges = "; ".join(
                f"'{link.parent}' -> '{child}' {_format_stamp(link.stamps[0])} .. {_format_stamp(link.stamps[-1])}"
                for child, link in dynamic
            )
            raise ExtrapolationError(
                f"cannot look up '{target_frame}' -> '{source_frame}' at the latest common time: the links' "
                f"histories do not overlap ({ranges})"
            )
        return newest_common


def _invert(transform: np.ndarray) -> np.ndarray:
    inverse = np.eye(4)
    rotation = transform[:3, :3]
    inverse[:3, :3] = rotation.T
    inverse[:3, 3] = -rotation.T @ transform[:3, 3]
    return inverse
