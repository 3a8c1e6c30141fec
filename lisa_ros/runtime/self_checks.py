"""Self-checks for the set-up mistakes users of ROS perception wrappers make again and again.

Each check looks at one thing the node sees and returns a `Finding` (a cause and a
warning saying what is wrong and what to do) or None when it looks right; a
`OncePerCause` reporter logs each cause once and keeps it for diagnostics, so a mistake
is never silent and never floods the log. ROS-free: the node passes plain values.

- depth_units: depth whose median is implausible for its encoding and depth_scale
  (metres in 16UC1, millimetres in 32FC1);
- camera_info_size: camera_info for an image of another size (another aspect ratio)
  than the depth image, or without calibration;
- target_frame: a target_frame tf cannot reach, naming the missing link;
- incompatible_qos: a subscriber of an output that asks for QoS the node does not offer;
- clock: the clock jumping back, or images stamped long before the node's clock (a bag
  replayed without use_sim_time).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import yaml

from .types import NS_PER_S

# Plausible scene depth, metres: nearer or farther medians mean the units are off.
NEAREST_MEDIAN_M = 0.05
FARTHEST_MEDIAN_M = 50.0
# Images older than this (seconds, by the node's clock) without use_sim_time: a replayed bag.
REPLAY_AGE_S = 60.0
# Backward clock or stamp jumps smaller than this (seconds) are jitter, not a jump.
JUMP_TOLERANCE_S = 1.0


@dataclass(frozen=True)
class Finding:
    """A self-check's warning: `cause` names the mistake (one report per cause), `text` says what to do."""

    cause: str
    text: str


class OncePerCause:
    """Reports each cause once: `log(text)` the first time, and keeps every reported finding.

    Arguments:
        log (callable(str)): e.g. the node logger's warning.
    Thread-safe (subscription callbacks report from several threads).
    """

    def __init__(self, log: Callable[[str], None]):
        self._log = log
        self._findings: dict[str, str] = {}
        self._lock = threading.Lock()

    def report(self, finding: Finding | None) -> bool:
        """Log `finding` unless its cause was reported before (None: nothing). Returns True when logged."""
        if finding is None:
            return False
        with self._lock:
            if finding.cause in self._findings:
                return False
            self._findings[finding.cause] = finding.text
        self._log(finding.text)
        return True

    @property
    def findings(self) -> dict[str, str]:
        """{cause: warning} of everything reported so far, in order: for diagnostics."""
        with self._lock:
            return dict(self._findings)

    def diagnostic_values(self) -> dict[str, str]:
        """The findings as diagnostics key/values ("self_check <cause>": warning)."""
        return {f"self_check {cause}": text for cause, text in self.findings.items()}


# --- depth units --------------------------------------------------------------------------


def depth_units(encoding: str, pixels: np.ndarray, depth_scale: float) -> Finding | None:
    """Depth whose median is implausible for its encoding and depth_scale.

    Arguments:
        encoding (str): the depth image's encoding: 16UC1/mono16 (integer units of
            1/depth_scale metres) or 32FC1 (metres).
        pixels (np.ndarray [H,W]): the raw values (lisa_ros.runtime.codec.depth_pixels).
        depth_scale (float): the node's depth_scale parameter.
    """
    values = np.asarray(pixels)[::4, ::4].astype(np.float64)  # every 16th pixel is plenty for a median
    valid = values[np.isfinite(values) & (values > 0)]
    if valid.size == 0:
        return None  # no reading at all: nothing to judge (the 3D outputs say "no depth")
    raw = float(np.median(valid))
    integer = encoding in ("16UC1", "mono16")
    metres = raw / depth_scale if integer else raw
    if NEAREST_MEDIAN_M <= metres <= FARTHEST_MEDIAN_M:
        return None
    seen = f"{encoding} depth has a median of {raw:g}"
    if integer:
        seen += f" units = {metres:g} m with depth_scale {depth_scale:g}"
        if metres < NEAREST_MEDIAN_M and NEAREST_MEDIAN_M <= raw <= FARTHEST_MEDIAN_M:
            advice = (
                "the values look like whole metres: a depth camera's 16UC1 is millimetres (depth_scale 1000); "
                "publish metres as 32FC1"
            )
        else:
            scale = raw / 1.5  # the scale that would put the median at a typical 1.5 m
            advice = f"check depth_scale (units per metre); about {scale:.3g} would put it at 1.5 m"
    else:
        seen += " m"
        if metres > FARTHEST_MEDIAN_M and NEAREST_MEDIAN_M <= metres / 1000.0 <= FARTHEST_MEDIAN_M:
            advice = "32FC1 depth must be metres, this looks like millimetres: publish it as 16UC1 or divide by 1000"
        else:
            advice = "32FC1 depth must be metres"
    return Finding(
        "depth_units", f"{seen}: implausible ({NEAREST_MEDIAN_M:g}..{FARTHEST_MEDIAN_M:g} m expected); {advice}"
    )


# --- camera_info size ---------------------------------------------------------------------


def camera_info_size(info_width: int, info_height: int, depth_width: int, depth_height: int) -> Finding | None:
    """camera_info for another image than the depth image: zero size (no calibration) or another
    aspect ratio. The same aspect ratio at another size is fine: the intrinsics are scaled (a
    colour camera's camera_info with depth registered to the colour image at a lower resolution)."""
    if info_width <= 0 or info_height <= 0:
        return Finding(
            "camera_info_size",
            f"camera_info has no image size ({info_width}x{info_height}): the camera is not calibrated",
        )
    if abs(info_width * depth_height - info_height * depth_width) > 0.01 * info_width * depth_height:
        return Finding(
            "camera_info_size",
            f"camera_info is for {info_width}x{info_height} images but the depth image is {depth_width}x{depth_height} "
            "(another aspect ratio): remap camera_info to the depth image's own (e.g. aligned_depth_to_color's "
            "camera_info); no 3D regions until then",
        )
    return None


# --- tf -----------------------------------------------------------------------------------


def parse_tf_frames(frames_yaml: str) -> dict[str, str]:
    """{child: parent} of tf2's `Buffer.all_frames_as_yaml()` (empty for no frames)."""
    content = yaml.safe_load(frames_yaml) if frames_yaml and frames_yaml.strip() else None
    if not isinstance(content, dict):
        return {}
    return {str(child): str(entry["parent"]) for child, entry in content.items() if isinstance(entry, dict)}


def _root(frame: str, parents: dict[str, str]) -> str:
    seen = set()
    while frame in parents and frame not in seen:
        seen.add(frame)
        frame = parents[frame]
    return frame


def _known(frame: str, parents: dict[str, str]) -> bool:
    return frame in parents or frame in parents.values()


def target_frame_reach(target_frame: str, camera_frame: str, parents: dict[str, str]) -> Finding | None:
    """A target_frame tf cannot reach from the camera frame, naming the missing link.

    Arguments:
        target_frame (str): the node's target_frame ("" : no check).
        camera_frame (str): the depth image's frame.
        parents (dict[str, str]): tf's tree, {child: parent} (parse_tf_frames).
    """
    if not target_frame or not camera_frame or target_frame == camera_frame:
        return None
    cause = f"target_frame {target_frame} from {camera_frame}"
    listed = ", ".join(sorted(set(parents) | set(parents.values()))) or "none"
    if not _known(target_frame, parents):
        return Finding(
            cause,
            f"target_frame {target_frame!r} is not in tf (frames: {listed}): nothing publishes it; start the node "
            "that does (localisation/SLAM for map, odometry for odom) or set target_frame to one of these",
        )
    if not _known(camera_frame, parents):
        return Finding(
            cause,
            f"the camera frame {camera_frame!r} is not in tf (frames: {listed}): publish the camera's transforms "
            "(the camera driver's tf, or robot_state_publisher with the camera in the URDF)",
        )
    target_root, camera_root = _root(target_frame, parents), _root(camera_frame, parents)
    if target_root != camera_root:
        return Finding(
            cause,
            f"tf has no path from {camera_frame!r} to {target_frame!r}: they are in separate trees with roots "
            f"{camera_root!r} and {target_root!r}; the missing link is a transform between {target_root!r} and "
            f"{camera_root!r} (e.g. map -> odom from localisation, or a static transform)",
        )
    return None


# --- QoS ----------------------------------------------------------------------------------

_QOS_ADVICE = {
    "DURABILITY": "the node offers volatile durability: subscribe with durability volatile (not transient_local)",
    "RELIABILITY": "the node offers {reliability}: subscribe with a reliability it offers or best_effort",
    "DEADLINE": "the node offers no deadline: subscribe without one",
    "LIVELINESS": "the node offers automatic liveliness: subscribe with automatic liveliness",
    "LIVELINESS_LEASE_DURATION": "the node offers an infinite lease duration: subscribe without one",
    "HISTORY": "subscribe with keep_last or keep_all history",
}


def incompatible_qos(topic: str, policy: str, offered_reliability: str = "reliable") -> Finding:
    """A subscriber of output `topic` asked for a QoS the node does not offer.

    Arguments:
        topic (str): the output's resolved topic.
        policy (str): the incompatible policy's name, as rclpy's QoSPolicyKind names it
            (QoSOfferedIncompatibleQoSInfo.last_policy_kind.name: "DURABILITY", ...).
        offered_reliability (str): the output's reliability ("reliable" or "best_effort").
    """
    advice = _QOS_ADVICE.get(policy, "match the node's QoS (docs/ros.md, Topics)")
    return Finding(
        f"incompatible_qos {topic} {policy}",
        f"a subscriber of {topic} asks for an incompatible {policy.lower()} QoS and gets nothing: "
        + advice.format(reliability=offered_reliability),
    )


# --- clock --------------------------------------------------------------------------------


def clock_jump(delta_ns: int, use_sim_time: bool) -> Finding | None:
    """The node's clock jumped back by -delta_ns (rclpy's TimeJump.delta; forward jumps are fine)."""
    if delta_ns > -JUMP_TOLERANCE_S * NS_PER_S:
        return None
    seconds = -delta_ns / NS_PER_S
    if use_sim_time:
        why = "the bag restarted or loops (--loop); stamps from before the jump are matched no more"
    else:
        why = "the system clock was set back"
    return Finding("clock_jump", f"the clock jumped back {seconds:.1f} s: {why}")


class StampWatch:
    """Watches the image stamps against the node's clock: images stamped long before it without
    use_sim_time (a bag replayed without --clock and use_sim_time), and stamps jumping back (a bag
    restarted or looping). Feed every image's stamp; not thread-safe (one image subscription)."""

    def __init__(self):
        self._last_stamp: int | None = None

    def check(self, stamp_ns: int, now_ns: int, use_sim_time: bool) -> Finding | None:
        previous, self._last_stamp = self._last_stamp, int(stamp_ns)
        if previous is not None and stamp_ns < previous - JUMP_TOLERANCE_S * NS_PER_S:
            seconds = (previous - stamp_ns) / NS_PER_S
            return Finding(
                "stamp_jump",
                f"image stamps jumped back {seconds:.1f} s: a bag restarted or looping? Cached depth, poses and "
                "live targets from before belong to another time; `clear` the live targets",
            )
        age = (now_ns - stamp_ns) / NS_PER_S
        if not use_sim_time and stamp_ns > 0 and age > REPLAY_AGE_S:
            return Finding(
                "replay_without_sim_time",
                f"images are stamped {age:.0f} s before the node's clock with use_sim_time false: a bag replay? "
                "Play it with --clock and start the node with use_sim_time:=true (or max_image_age:=0)",
            )
        return None
