"""What a robot integration needs of the pipeline and the worker, without ROS: image/depth
pairs, a clear error for a device that is not there, one model shared by several cameras,
and deactivation that answers every queued command."""

import threading

import numpy as np
import pytest

from lisa_ros.runtime.pipeline import Pipeline, resolve_device
from lisa_ros.runtime.shared_models import ModelRegistry
from lisa_ros.runtime.types import NS_PER_S, Result, Status
from lisa_ros.runtime.worker import DEACTIVATED, STOPPED, CommandWorker
from tests.runtime.test_pipeline import GatedPipeline
from tests.runtime.test_pipeline_3d import assert_region_is_the_face, intrinsics, make_pipeline, rgb, scene_depth

T0 = 1_700_000_000 * NS_PER_S
MS = NS_PER_S // 1000
PERIOD = 100 * MS  # a 10 Hz camera: one frame period is more than max_depth_skew (50 ms)


# --- image/depth pairs ---------------------------------------------------------------------


def stream(pipeline, events):
    """Feed ("image" | "depth", k) events: frame k of the camera, stamped T0 + k periods."""
    for role, k in events:
        stamp = T0 + k * PERIOD
        if role == "image":
            pipeline.set_frame(rgb(), stamp, "camera")
        else:
            pipeline.set_depth(scene_depth(), stamp, "camera")
            pipeline.set_camera_info(intrinsics(), stamp, "camera")


def test_a_late_depth_image_pairs_with_its_own_image():
    pipeline = make_pipeline(max_depth_skew=0.05)
    # Depth runs two frames behind the colour images (a loaded machine): the newest images
    # have no depth yet, image 1 has.
    stream(pipeline, [("image", 0), ("image", 1), ("depth", 0), ("image", 2), ("depth", 1), ("image", 3)])
    result = pipeline.answer(1, "segment the red square", T0 + 3 * PERIOD)
    assert result.status == Status.OK and result.region_status == ""
    assert (result.frame_stamp, result.depth_stamp) == (T0 + PERIOD, T0 + PERIOD)
    assert_region_is_the_face(result.regions[0])
    stream(pipeline, [("depth", 2), ("depth", 3)])  # the rest arrives: the newest image has its pair
    result = pipeline.answer(2, "segment the red square", T0 + 3 * PERIOD)
    assert (result.frame_stamp, result.depth_stamp) == (T0 + 3 * PERIOD, T0 + 3 * PERIOD)
    assert result.region_status == ""


def test_depth_ahead_of_the_images_pairs_too():
    pipeline = make_pipeline(max_depth_skew=0.05)
    stream(pipeline, [("depth", 0), ("depth", 1), ("image", 0), ("depth", 2), ("image", 1)])
    result = pipeline.answer(1, "segment the red square", T0 + 2 * PERIOD)
    assert (result.frame_stamp, result.depth_stamp) == (T0 + PERIOD, T0 + PERIOD)
    assert result.region_status == ""


def test_without_any_pair_the_newest_image_is_answered_and_the_status_says_why():
    pipeline = make_pipeline(max_depth_skew=0.05)
    stream(pipeline, [("depth", 0), ("image", 5), ("image", 6)])
    result = pipeline.answer(1, "segment the red square", T0 + 6 * PERIOD)
    assert result.status == Status.OK and result.frame_stamp == T0 + 6 * PERIOD
    assert result.regions == [] and result.depth_stamp == 0 and "max_depth_skew" in result.region_status


def test_without_depth_the_newest_image_is_answered():
    pipeline = make_pipeline()
    stream(pipeline, [("image", 0), ("image", 1)])
    result = pipeline.answer(1, "segment the red square", T0 + PERIOD)
    assert result.frame_stamp == T0 + PERIOD and result.depth_stamp == 0 and "no depth" in result.region_status


# --- devices and shared models --------------------------------------------------------------


def test_cuda_without_a_gpu_says_what_to_do(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device is 'cuda' but torch finds no CUDA GPU.*'cpu'"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="finds no CUDA GPU"):
        Pipeline.from_parameters({"device": "cuda"})
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"


def test_pipelines_of_several_cameras_share_one_loaded_model():
    registry = ModelRegistry()
    params = {"device": "cpu", "max_new_tokens": 2, "max_image_age": 0.0}
    front = Pipeline.from_parameters(params, models=registry)
    wrist = Pipeline.from_parameters({**params, "keep_conversation": False}, models=registry)
    assert registry.loads == 1
    assert front.predictor.model is wrist.predictor.model and front.predictor is not wrist.predictor
    assert front.model_lock is wrist.model_lock
    assert front.conversation is not wrist.conversation and wrist.keep_conversation is False
    image = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    front.set_frame(image, T0)
    assert wrist.answer(1, "segment the cup", T0).error == "no image has been received yet"  # its own frames
    assert front.answer(1, "segment the cup", T0).ok
    front.close()
    other = Pipeline.from_parameters(params, models=registry)  # the model is still loaded (wrist uses it)
    assert registry.loads == 1
    wrist.close()
    other.close()
    Pipeline.from_parameters(params, models=registry).close()  # the last user freed it: loaded again
    assert registry.loads == 2


class BusyPipeline(GatedPipeline):
    """Records how many answers run at once (across workers sharing its model_lock)."""

    def __init__(self, lock, state):
        super().__init__()
        self.model_lock, self.state = lock, state
        self.gate.set()

    def answer(self, command_id, command, stamp_now, **kwargs):
        with self.state["lock"]:
            self.state["running"] += 1
            self.state["most"] = max(self.state["most"], self.state["running"])
        threading.Event().wait(0.002)  # let the other worker's thread run meanwhile
        with self.state["lock"]:
            self.state["running"] -= 1
        return Result(command_id, command, stamp_now, status=Status.NO_TARGET, answer="ok")


def test_workers_sharing_a_model_take_turns():
    lock, state = threading.Lock(), {"lock": threading.Lock(), "running": 0, "most": 0}
    workers = [CommandWorker(BusyPipeline(lock, state)) for _ in range(2)]
    try:
        jobs = [worker.submit(k, "c", T0) for k in range(20) for worker in workers]
        assert all(job.wait(30) is not None for job in jobs)
    finally:
        for worker in workers:
            worker.stop()
    assert state["most"] == 1


# --- deactivation ----------------------------------------------------------------------------


def test_drop_queued_answers_every_queued_command_and_the_worker_goes_on():
    fake = GatedPipeline()
    worker = CommandWorker(fake, queue_size=8)
    results = []
    try:
        running = worker.submit(0, "zero", T0, on_result=results.append)
        assert fake.started.wait(5)
        queued = [worker.submit(k, f"c{k}", T0, on_result=results.append) for k in (1, 2, 3)]
        threading.Timer(0.2, fake.gate.set).start()
        assert worker.drop_queued(DEACTIVATED, timeout=10)
        assert running.result.status == Status.NO_TARGET  # the running one is answered
        assert all(job.result.status == Status.ERROR and job.result.error == DEACTIVATED for job in queued)
        assert sorted(r.command_id for r in results) == [0, 1, 2, 3]  # exactly one result each
        assert worker.submit(4, "after", T0).wait(5).status == Status.NO_TARGET
    finally:
        fake.gate.set()
        worker.stop()


def test_a_stopping_node_cancels_the_running_command():
    fake = GatedPipeline()
    worker = CommandWorker(fake, queue_size=8)
    try:
        running = worker.submit(0, "a long answer", T0)
        assert fake.started.wait(5)
        queued = worker.submit(1, "next", T0)
        threading.Timer(0.2, fake.gate.set).start()  # the stand-in looks at should_cancel then
        assert worker.drop_queued(STOPPED, timeout=10, cancel_running=True)
        assert running.result.status == Status.ERROR and running.result.error == STOPPED and running.result.canceled
        assert queued.result.error == STOPPED
    finally:
        fake.gate.set()
        worker.stop()
