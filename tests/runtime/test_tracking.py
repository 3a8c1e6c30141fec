"""Live targets (lisa_ros.runtime.tracker through a Pipeline) with the built-in demo model.

A held-out demo scene (lisa_ros.synthetic.scenes) gives images, depth, poses and
ground-truth masks; the command is answered on the first view and its target tracked on
later ones. Frames carry their own depth, intrinsics and pose (as in the bag tools).
"""

import threading
import time

import numpy as np
import pytest

from lisa_ros.geometry import look_at
from lisa_ros.runtime.pipeline import Pipeline
from lisa_ros.runtime.tracking import TargetStatus, TrackingSettings, judge, median_distance
from lisa_ros.runtime.types import NS_PER_S, Status
from lisa_ros.runtime.worker import CommandWorker
from lisa_ros.synthetic.scenes import make_scene

FRAMES = 8
PERIOD = NS_PER_S // 4


@pytest.fixture(scope="module")
def scene():
    return make_scene(0, "test", 0, frames=FRAMES)


@pytest.fixture(scope="module")
def views(scene):
    return [scene.render(i) for i in range(FRAMES)]


@pytest.fixture(scope="module")
def command(scene):
    # The compost bin: a large target the demo model finds well (gIoU ~0.9 on this scene).
    return next(c for c in scene.commands("heldout") if "scraps" in c.text)


@pytest.fixture(scope="module")
def model_pipeline():
    return Pipeline.from_parameters({"device": "cpu", "keep_conversation": False, "max_image_age": 0.0})


@pytest.fixture
def pipeline(model_pipeline):
    """The loaded pipeline with default tracking settings and no live target."""
    model_pipeline.tracker.settings = TrackingSettings()
    model_pipeline.tracker.clear(0)
    return model_pipeline


def show(pipeline, scene, view, index, pose=None, **overrides):
    """Give `view` to the pipeline as the newest frame (stamp: index periods)."""
    geometry = {"depth": view.depth, "intrinsics": scene.intrinsics, "pose": view.pose if pose is None else pose}
    geometry.update(overrides)
    return pipeline.set_frame(view.rgb, index * PERIOD + 1, "camera", target_frame="map", **geometry)


def iou(mask, truth):
    union = (mask | truth).sum()
    return (mask & truth).sum() / union if union else 1.0


def answer(pipeline, scene, views, command):
    show(pipeline, scene, views[0], 0)
    result = pipeline.answer(1, command.text, 1)
    assert result.status == Status.OK, result.error
    return result


def test_an_answer_starts_one_live_target_per_mask_and_a_new_command_replaces_them(pipeline, scene, views, command):
    first = answer(pipeline, scene, views, command)
    assert [(t.status, t.views_fused) for t in first.targets] == [(TargetStatus.TRACKING, 1)]
    second = answer(pipeline, scene, views, command)
    statuses = [(t.target_id, t.status) for t in second.targets]
    assert statuses == [(first.targets[0].target_id, TargetStatus.DROPPED), (first.targets[0].target_id + 1, 0)]
    assert "replaced by a new command" in second.targets[0].status_message
    assert [t.target_id for t in pipeline.tracker.targets] == [second.targets[1].target_id]


def test_tracking_follows_the_target_and_fuses_its_views(pipeline, scene, views, command):
    answer(pipeline, scene, views, command)
    assert pipeline.tracker.track() is None  # the newest frame is the one answered
    for index in range(1, FRAMES):
        show(pipeline, scene, views[index], index)
        update = pipeline.tracker.track()
        (target,) = update.targets
        assert target.status == TargetStatus.TRACKING, target.status_message
        assert iou(target.mask, command.mask(views[index])) > 0.6
        assert target.views_fused == index + 1
        assert set(update.timings) >= {"sam_encoder", "mask_decoder", "regions", "total"}
    truth_center = scene.objects[command.target].box[0]
    assert np.linalg.norm(target.region.centroid - truth_center) < 0.1
    assert target.reasks == 0


def test_the_newest_frame_only_and_the_rate_limit(pipeline, scene, views, command):
    answer(pipeline, scene, views, command)
    skipped = pipeline.tracker.frames_skipped
    show(pipeline, scene, views[1], 1)
    show(pipeline, scene, views[2], 2)  # replaces frame 1 before it was tracked
    assert pipeline.tracker.frames_skipped == skipped + 1
    assert pipeline.tracker.track().stamp == 2 * PERIOD + 1
    pipeline.tracker.settings = TrackingSettings(max_rate=1.0)  # one image per second: 4 periods apart
    show(pipeline, scene, views[3], 3)
    assert pipeline.tracker.track() is None
    show(pipeline, scene, views[6], 6)
    assert pipeline.tracker.track().stamp == 6 * PERIOD + 1


def test_a_target_that_leaves_the_view_is_lost_then_reacquired_by_a_reask(pipeline, scene, views, command):
    answer(pipeline, scene, views, command)
    show(pipeline, scene, views[1], 1)
    pipeline.tracker.track()
    # The camera turns its back on the table.
    eye = views[1].pose[:3, 3]
    away = look_at(eye, eye + (eye - scene.objects[command.target].box[0]))
    for index in (2, 3):
        show(pipeline, scene, scene.render(away), index, pose=away)
        (target,) = pipeline.tracker.track().targets
        assert target.status == TargetStatus.LOST and "out of view" in target.status_message
        assert target.mask is None and target.reasks == 0  # re-asking cannot find it there
    show(pipeline, scene, views[4], 4)
    (target,) = pipeline.tracker.track().targets
    assert target.status == TargetStatus.REACQUIRED, target.status_message
    assert target.reasks == 1 and "re-acquired by re-ask 1" in target.status_message
    assert iou(target.mask, command.mask(views[4])) > 0.6


def test_a_moved_target_is_reacquired_and_its_old_views_dropped(pipeline, scene, views, command):
    answer(pipeline, scene, views, command)
    for index in (1, 2):
        show(pipeline, scene, views[index], index)
        pipeline.tracker.track()
    # The same image from a camera pose 0.5 m further back along its optical axis: the
    # target appears moved 0.5 m towards the old camera, on the same pixels.
    offset = -0.5 * views[3].pose[:3, 2]
    moved_pose = views[3].pose.copy()
    moved_pose[:3, 3] += offset
    show(pipeline, scene, views[3], 3, pose=moved_pose)
    (target,) = pipeline.tracker.track().targets
    assert target.status == TargetStatus.REACQUIRED and "moved" in target.status_message, target.status_message
    assert target.views_fused == 1  # the region follows the target instead of smearing
    truth_center = scene.objects[command.target].box[0] + offset
    assert np.linalg.norm(target.region.centroid - truth_center) < 0.1


def test_bad_input_during_tracking_shows_in_the_status(pipeline, scene, views, command):
    answer(pipeline, scene, views, command)

    def broken():
        raise ValueError("truncated image data")

    pipeline.set_frame(broken, PERIOD + 1, "camera")
    update = pipeline.tracker.track()
    (target,) = update.targets
    assert target.status == TargetStatus.LOST and "invalid image: truncated image data" in target.status_message
    assert update.image is None
    show(pipeline, scene, views[2], 2, depth=None, intrinsics=None, pose=None)  # no depth anywhere
    (target,) = pipeline.tracker.track().targets
    assert target.status == TargetStatus.REACQUIRED and "no 3D on this frame" in target.status_message


def test_targets_expire_and_clear_reports_them_dropped(pipeline, scene, views, command):
    pipeline.tracker.settings = TrackingSettings(expiry=1.0)
    answer(pipeline, scene, views, command)
    pipeline.set_frame(lambda: np.zeros((2, 2)), 2 * NS_PER_S, "camera")  # invalid: never found
    (target,) = pipeline.tracker.track().targets
    assert target.status == TargetStatus.DROPPED and "expired" in target.status_message
    assert pipeline.tracker.targets == []
    answer(pipeline, scene, views, command)
    update = pipeline.tracker.clear(5)
    assert [t.status for t in update.targets] == [TargetStatus.DROPPED] and pipeline.tracker.targets == []
    assert pipeline.tracker.clear(6) is None


def test_keep_targets_with_a_limit(pipeline, scene, views, command):
    pipeline.tracker.settings = TrackingSettings(keep_targets=True, max_targets=2)
    ids = [answer(pipeline, scene, views, command).targets[-1].target_id for _ in range(3)]
    assert [t.target_id for t in pipeline.tracker.targets] == ids[1:]


def test_tracking_off_keeps_no_target(pipeline, scene, views, command):
    pipeline.tracker.settings = TrackingSettings(enabled=False)
    assert answer(pipeline, scene, views, command).targets == []
    assert pipeline.tracker.targets == []


def test_judge_checks():
    from lisa_ros.runtime.tracking import LiveTarget, ViewWindow

    settings = TrackingSettings(min_score=0.5, min_area=10)
    target = LiveTarget(1, 1, "c", "a", 0, None, 0, 0, views=ViewWindow(5, 0.01))
    mask = np.zeros((100, 100), bool)
    mask[10:30, 10:30] = True
    box = np.array([10, 10, 29, 29])
    assert "score" in judge(target, mask, 0.2, box, None, settings)
    assert judge(target, mask, 0.9, box, None, settings) == ""
    target.found(mask, 0.9, box, 0)
    small = np.zeros_like(mask)
    small[10:15, 10:14] = True
    assert "area" in judge(target, small, 0.9, np.array([10, 10, 13, 14]), None, settings)
    far = np.roll(mask, 60, axis=1)
    assert "jumped" in judge(target, far, 0.9, np.array([70, 10, 89, 29]), None, settings)
    fused = np.random.default_rng(0).uniform(0, 0.1, (51, 3))
    assert median_distance(fused, fused) == 0.0
    assert median_distance(fused + [0.3, 0.4, 0.0], fused) == pytest.approx(0.5)


def test_commands_never_wait_behind_more_than_one_tracking_step(pipeline, scene, views, command):
    """Frames arrive continuously while commands come in: each command is answered once, in
    order, and no tracking step starts while a command waits."""
    answer(pipeline, scene, views, command)
    events, lock = [], threading.Lock()
    track, answer_fn = pipeline.tracker.track, pipeline.answer

    def logged_track():
        with lock:
            events.append(("track", time.perf_counter()))
        return track()

    def logged_answer(command_id, *args, **kwargs):
        with lock:
            events.append(("answer", command_id))
        return answer_fn(command_id, *args, **kwargs)

    pipeline.tracker.track, pipeline.answer = logged_track, logged_answer
    results, updates = [], []
    worker = CommandWorker(pipeline, queue_size=8, on_track=updates.append)
    stop = threading.Event()

    def camera():
        index = 1
        while not stop.is_set():
            show(pipeline, scene, views[index % FRAMES], index)
            worker.frame_arrived()
            index += 1
            time.sleep(0.02)

    thread = threading.Thread(target=camera)
    thread.start()
    try:
        time.sleep(0.5)
        submitted = {}
        for command_id in range(1, 6):
            with lock:
                submitted[command_id] = len(events)
            worker.submit(command_id, command.text, time.time_ns(), on_result=results.append)
            time.sleep(0.05)
        deadline = time.monotonic() + 120
        while len(results) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
        worker.stop()
        pipeline.tracker.track, pipeline.answer = track, answer_fn
    assert [r.command_id for r in results] == [1, 2, 3, 4, 5]
    assert all(r.status == Status.OK for r in results)
    for command_id, before in submitted.items():
        started = events.index(("answer", command_id))
        tracked_between = [e for e in events[before:started] if e[0] == "track"]
        assert len(tracked_between) <= 1, (command_id, tracked_between)
    assert updates, "the targets were tracked between commands"


def test_a_frame_waits_for_its_depth_when_the_depth_comes_after_the_image(pipeline, scene, views, command):
    """Live cameras publish depth beside the image: tracking the image before its depth
    arrived would lose the 3D view."""
    pipeline.lifter.pose_lookup = None
    answer(pipeline, scene, views, command)
    pipeline.set_depth(views[0].depth, 1, "camera")
    pipeline.set_camera_info(scene.intrinsics, 1, "camera")
    pipeline.set_frame(views[1].rgb, PERIOD + 1, "camera")
    assert pipeline.tracker.track() is None  # its depth is on its way
    pipeline.set_depth(views[1].depth, PERIOD + 1, "camera")
    pipeline.set_camera_info(scene.intrinsics, PERIOD + 1, "camera")
    (target,) = pipeline.tracker.track().targets
    assert target.status == TargetStatus.TRACKING and "no 3D" not in target.status_message
    # Depth and camera_info newer than the image mean the image's own will not come: no wait.
    pipeline.set_depth(views[3].depth, 3 * PERIOD + 1, "camera")
    pipeline.set_camera_info(scene.intrinsics, 3 * PERIOD + 1, "camera")
    pipeline.set_frame(views[2].rgb, 2 * PERIOD + 1, "camera")
    (target,) = pipeline.tracker.track().targets
    assert "no 3D on this frame" in target.status_message
