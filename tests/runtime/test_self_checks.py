"""lisa_ros.runtime.self_checks: each check fires on its mistake, stays quiet on a correct set-up,
and the reporter reports each cause once."""

import numpy as np
import pytest

from lisa_ros.runtime import codec
from lisa_ros.runtime.self_checks import (
    Finding,
    OncePerCause,
    StampWatch,
    camera_info_size,
    clock_jump,
    depth_units,
    incompatible_qos,
    parse_tf_frames,
    target_frame_reach,
)
from lisa_ros.runtime.types import NS_PER_S

RNG = np.random.default_rng(0)


def _scene_m(shape=(48, 64)):
    """A table scene 0.6..2.5 m away with holes (0) where the sensor saw nothing."""
    depth = RNG.uniform(0.6, 2.5, shape)
    depth[::7, ::5] = 0.0
    return depth


# --- depth units ---------------------------------------------------------------------------


def test_depth_in_the_declared_units_is_quiet():
    millimetres = (_scene_m() * 1000).astype(np.uint16)
    assert depth_units("16UC1", millimetres, 1000.0) is None
    assert depth_units("mono16", (_scene_m() * 10000).astype(np.uint16), 10000.0) is None  # 0.1 mm units
    assert depth_units("32FC1", _scene_m().astype(np.float32), 1000.0) is None  # depth_scale does not apply
    assert depth_units("32FC1", np.full((8, 8), np.nan, np.float32), 1000.0) is None  # no reading: no judgement


def test_metres_in_16uc1_fire():
    metres_as_integers = np.round(_scene_m()).astype(np.uint16)  # 1 or 2 "units"
    finding = depth_units("16UC1", metres_as_integers, 1000.0)
    assert finding.cause == "depth_units"
    assert "16UC1 depth has a median of" in finding.text and "whole metres" in finding.text


def test_millimetres_in_32fc1_fire():
    finding = depth_units("32FC1", (_scene_m() * 1000).astype(np.float32), 1000.0)
    assert finding.cause == "depth_units" and "looks like millimetres" in finding.text


def test_a_wrong_depth_scale_fires_with_a_suggestion():
    finding = depth_units("16UC1", (_scene_m() * 1000).astype(np.uint16), 1.0)  # millimetres read as metres
    assert finding is not None and "check depth_scale" in finding.text and "depth_scale 1" in finding.text


def test_depth_check_reads_the_raw_message_values():
    message = codec.rgb_to_image_fields((_scene_m() * 1000).astype(np.uint16), "16UC1")
    from types import SimpleNamespace

    encoding, pixels = codec.depth_pixels(SimpleNamespace(**message))
    assert encoding == "16UC1" and pixels.dtype == np.uint16 and pixels.shape == (48, 64)
    assert depth_units(encoding, pixels, 1000.0) is None


# --- camera_info size ----------------------------------------------------------------------


def test_camera_info_of_the_depth_image_or_scaled_is_quiet():
    assert camera_info_size(640, 480, 640, 480) is None
    assert camera_info_size(1280, 720, 640, 360) is None  # same aspect: scaled intrinsics


def test_camera_info_of_another_image_fires():
    finding = camera_info_size(640, 480, 1280, 720)
    assert finding.cause == "camera_info_size"
    assert "640x480" in finding.text and "1280x720" in finding.text
    assert "not calibrated" in camera_info_size(0, 0, 640, 480).text


# --- tf ------------------------------------------------------------------------------------

FRAMES_YAML = """
odom: {parent: 'map', broadcaster: 'default_authority', rate: 10.0, most_recent_transform: 1.0,
  oldest_transform: 0.0, buffer_length: 1.0}
base_link: {parent: 'odom', broadcaster: 'default_authority', rate: 50.0, most_recent_transform: 1.0,
  oldest_transform: 0.0, buffer_length: 1.0}
camera_link: {parent: 'base_link', broadcaster: 'default_authority', rate: 10000.0, most_recent_transform: 0.0,
  oldest_transform: 0.0, buffer_length: 0.0}
camera_color_optical_frame: {parent: 'camera_link', broadcaster: 'default_authority', rate: 10000.0,
  most_recent_transform: 0.0, oldest_transform: 0.0, buffer_length: 0.0}
"""


def test_tf_frames_parse():
    parents = parse_tf_frames(FRAMES_YAML)
    assert parents["camera_color_optical_frame"] == "camera_link" and parents["odom"] == "map"
    assert parse_tf_frames("") == {} and parse_tf_frames("[]") == {}


def test_a_reachable_target_frame_is_quiet():
    parents = parse_tf_frames(FRAMES_YAML)
    for target in ("map", "odom", "base_link", "camera_color_optical_frame"):
        assert target_frame_reach(target, "camera_color_optical_frame", parents) is None
    assert target_frame_reach("", "camera_color_optical_frame", {}) is None  # no target_frame: no tf needed


def test_an_unpublished_target_frame_is_named():
    parents = parse_tf_frames(FRAMES_YAML)
    finding = target_frame_reach("world", "camera_color_optical_frame", parents)
    assert "'world' is not in tf" in finding.text and "camera_link" in finding.text


def test_an_unpublished_camera_frame_is_named():
    finding = target_frame_reach("map", "camera_depth_optical_frame", parse_tf_frames(FRAMES_YAML))
    assert "camera frame 'camera_depth_optical_frame' is not in tf" in finding.text


def test_separate_trees_name_the_missing_link():
    parents = parse_tf_frames(FRAMES_YAML)
    del parents["odom"]  # no localisation: map -> odom is missing
    parents["charging_dock"] = "map"  # map itself is published (a map server's frames)
    finding = target_frame_reach("map", "camera_color_optical_frame", parents)
    assert "roots 'odom' and 'map'" in finding.text
    assert "missing link is a transform between 'map' and 'odom'" in finding.text


# --- QoS -----------------------------------------------------------------------------------


def test_incompatible_qos_says_which_policy_and_what_to_do():
    finding = incompatible_qos("/lisa/markers", "DURABILITY")
    assert finding.cause == "incompatible_qos /lisa/markers DURABILITY"
    assert "/lisa/markers" in finding.text and "durability volatile" in finding.text
    other = incompatible_qos("/lisa/overlay", "RELIABILITY", offered_reliability="best_effort")
    assert "offers best_effort" in other.text and other.cause != finding.cause


# --- clock ---------------------------------------------------------------------------------


def test_clock_jumps_back_fire_forward_and_jitter_do_not():
    assert clock_jump(5 * NS_PER_S, use_sim_time=True) is None
    assert clock_jump(-NS_PER_S // 10, use_sim_time=False) is None
    assert "bag restarted" in clock_jump(-30 * NS_PER_S, use_sim_time=True).text
    assert "system clock was set back" in clock_jump(-30 * NS_PER_S, use_sim_time=False).text


def test_live_images_are_quiet():
    watch = StampWatch()
    now = 1_700_000_000 * NS_PER_S
    for index in range(10):
        stamp = now + index * NS_PER_S // 30
        assert watch.check(stamp - NS_PER_S // 20, stamp, use_sim_time=False) is None


def test_a_bag_replayed_without_sim_time_fires():
    watch = StampWatch()
    now = 1_800_000_000 * NS_PER_S
    recorded = now - 3 * 24 * 3600 * NS_PER_S
    finding = watch.check(recorded, now, use_sim_time=False)
    assert finding.cause == "replay_without_sim_time" and "use_sim_time:=true" in finding.text
    assert watch.check(recorded, recorded, use_sim_time=True) is None  # with the bag's clock: fine


def test_a_looping_bag_fires():
    watch = StampWatch()
    start = 1_700_000_000 * NS_PER_S
    for seconds in range(5):
        assert watch.check(start + seconds * NS_PER_S, start + seconds * NS_PER_S, True) is None
    finding = watch.check(start, start + 5 * NS_PER_S, True)
    assert finding.cause == "stamp_jump" and "jumped back 4.0 s" in finding.text


# --- once per cause ------------------------------------------------------------------------


def test_each_cause_is_reported_once_and_kept_for_diagnostics():
    logged = []
    reporter = OncePerCause(logged.append)
    depth = (_scene_m() * 1000).astype(np.float32)
    assert reporter.report(depth_units("32FC1", depth, 1000.0))
    assert not reporter.report(depth_units("32FC1", depth * 2, 1000.0))  # same cause, other numbers
    assert not reporter.report(None)
    assert reporter.report(incompatible_qos("/lisa/markers", "DURABILITY"))
    assert not reporter.report(incompatible_qos("/lisa/markers", "DURABILITY"))
    assert reporter.report(incompatible_qos("/lisa/mask", "DURABILITY"))  # another output: another cause
    assert len(logged) == 3
    assert list(reporter.findings) == [
        "depth_units",
        "incompatible_qos /lisa/markers DURABILITY",
        "incompatible_qos /lisa/mask DURABILITY",
    ]
    values = reporter.diagnostic_values()
    assert values["self_check depth_units"] == logged[0]


def test_a_correct_set_up_reports_nothing():
    logged = []
    reporter = OncePerCause(logged.append)
    parents = parse_tf_frames(FRAMES_YAML)
    watch = StampWatch()
    now = 1_700_000_000 * NS_PER_S
    for frame in range(20):
        stamp = now + frame * NS_PER_S // 15
        reporter.report(depth_units("16UC1", (_scene_m() * 1000).astype(np.uint16), 1000.0))
        reporter.report(camera_info_size(640, 480, 640, 480))
        reporter.report(target_frame_reach("map", "camera_color_optical_frame", parents))
        reporter.report(watch.check(stamp, stamp + NS_PER_S // 50, use_sim_time=False))
        reporter.report(clock_jump(NS_PER_S // 15, use_sim_time=False))
    assert logged == [] and reporter.findings == {}


@pytest.mark.parametrize("finding", [Finding("a", "x"), Finding("b", "y")])
def test_findings_are_values(finding):
    assert finding == Finding(finding.cause, finding.text)
