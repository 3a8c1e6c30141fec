"""Early results and pre-encoding through Pipeline and CommandWorker (issue 17), no ROS.

Early results: each [SEG]'s mask is sent the moment it is generated, equal to the final
result's mask and before it. Pre-encoding: the newest frame is encoded while the worker is
idle; a command is never answered on another frame than its result names, and a command
arriving during pre-encoding waits for that one encode at most (counted, not timed: the
seconds are in bench/pre_encode.py).
"""

import threading

import numpy as np
import pytest

from lisa_model import DEMO_MODEL_DIR, LisaPredictor, load_lisa
from lisa_ros.runtime.pipeline import Pipeline
from lisa_ros.runtime.types import NS_PER_S, Status
from lisa_ros.runtime.worker import CommandWorker
from training.data.demo_scenes import DemoScenesDataset

T0 = 1_700_000_000 * NS_PER_S
WAIT = 60  # seconds a test waits for the worker before failing (never reached when it works)


@pytest.fixture(scope="module")
def demo():
    """The shipped demo model, two frames and commands it answers with a [SEG] and an explanation."""
    model, tokenizer = load_lisa(DEMO_MODEL_DIR)
    dataset = DemoScenesDataset("test", num_scenes=1, frames_per_scene=2, phrasing="heldout", seed=0)
    commands = [command.text for command in dataset.visible_commands(0)[:2]]
    return model, tokenizer, [dataset.frame(0).rgb, dataset.frame(1).rgb], commands


class RecordingPredictor(LisaPredictor):
    """The real predictor, recording the key of every set_image; `hold` makes set_image wait."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.keys = []
        self.encoding = threading.Event()  # set while a set_image is held
        self.hold = threading.Event()
        self.hold.set()
        self.encoded = threading.Event()  # set when a set_image is done

    def set_image(self, image, key=None, image_embedding=None):
        self.keys.append(key)
        self.encoding.set()
        assert self.hold.wait(WAIT)
        self.encoding.clear()
        super().set_image(image, key, image_embedding)
        self.encoded.set()


def make_pipeline(demo, max_new_tokens=24, **settings):
    model, tokenizer, _, _ = demo
    predictor = RecordingPredictor(model, tokenizer, max_new_tokens=max_new_tokens)
    return Pipeline(predictor, max_image_age=0, **settings)


def fresh_answer(demo, rgb, stamp, command):
    """The answer of a new pipeline (no pre-encoding) on one frame."""
    pipeline = make_pipeline(demo, pre_encode=False)
    pipeline.set_frame(rgb, stamp, "camera")
    return pipeline.answer(1, command, stamp)


def assert_same_answer(result, reference):
    assert result.status == reference.status and result.answer == reference.answer
    assert result.frame_stamp == reference.frame_stamp
    np.testing.assert_array_equal(result.masks, reference.masks)
    np.testing.assert_array_equal(result.scores, reference.scores)


def test_early_results_are_the_final_masks_and_come_before_the_final_result(demo):
    _, _, frames, commands = demo
    pipeline = make_pipeline(demo)
    pipeline.set_frame(frames[0], T0, "camera")
    worker = CommandWorker(pipeline)
    events, done = [], threading.Event()

    def on_result(result):
        events.append(("result", result))
        done.set()

    try:
        job = worker.submit(
            1,
            commands[0],
            T0,
            on_result=on_result,
            on_early=lambda result: events.append(("early", result)),
            on_text=lambda text: events.append(("text", text)),
        )
        assert done.wait(WAIT)
    finally:
        worker.stop()
    final = job.result
    assert final.status == Status.OK and not final.early, final.error
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "result" and kinds.count("result") == 1  # answered once, after everything else
    early = [value for kind, value in events if kind == "early"]
    assert len(early) == final.masks.shape[0] >= 1
    for index, result in enumerate(early):
        assert result.early and result.status == Status.OK and result.command_id == 1
        assert (result.frame_stamp, result.frame_id) == (final.frame_stamp, final.frame_id)
        assert result.masks.shape[0] == index + 1  # every mask so far
        np.testing.assert_array_equal(result.masks, final.masks[: index + 1])
        np.testing.assert_array_equal(result.scores, final.scores[: index + 1])
        np.testing.assert_array_equal(result.boxes, final.boxes[: index + 1])
        assert final.answer.startswith(result.answer) and result.answer.endswith("[SEG]")
        assert result.regions == [] and "early" in result.region_status
    # The first mask came before the explanation was generated: text followed it.
    assert "text" in kinds[kinds.index("early") + 1 :]
    assert "".join(value for kind, value in events if kind == "text") == final.answer
    first_mask = final.timings["first_mask"]
    assert early[0].timings["first_mask"] == first_mask == early[0].timings["mask"]
    assert 0 < first_mask < final.timings["total"]
    assert_same_answer(final, fresh_answer(demo, frames[0], T0, commands[0]))


def test_a_pre_encoded_frame_starts_with_the_language_model(demo):
    _, _, frames, commands = demo
    pipeline = make_pipeline(demo)
    worker = CommandWorker(pipeline)
    try:
        pipeline.set_frame(frames[0], T0, "camera")
        worker.frame_arrived()
        worker.frame_arrived()  # one step queued at most: the frame is encoded once
        assert pipeline.predictor.encoded.wait(WAIT)
        job = worker.submit(1, commands[0], T0 + 1)
        result = job.wait(WAIT)
    finally:
        worker.stop()
    assert pipeline.pre_encoded == 1 and pipeline.predictor.keys == [T0]
    assert "clip" not in result.timings and "sam_encoder" not in result.timings  # encoded before
    assert_same_answer(result, fresh_answer(demo, frames[0], T0, commands[0]))


def test_a_command_on_another_frame_than_the_pre_encoded_one_is_answered_on_its_own(demo):
    _, _, frames, commands = demo
    pipeline = make_pipeline(demo)
    pipeline.set_frame(frames[1], T0, "camera")
    assert pipeline.pre_encode_newest().stamp == T0
    # A newer frame arrives before the command: it is answered on that one, encoded again.
    pipeline.set_frame(frames[0], T0 + 1, "camera")
    result = pipeline.answer(1, commands[0], T0 + 2, arrived=None)
    assert pipeline.predictor.keys == [T0, T0 + 1] and "clip" in result.timings
    assert_same_answer(result, fresh_answer(demo, frames[0], T0 + 1, commands[0]))
    # A newer frame arrives after the command, while it waited: the pre-encoded frame, the
    # newest when the command came, is answered (its stamp on the result).
    pipeline.set_frame(frames[1], T0 + 3, "camera")
    pipeline.pre_encode_newest()
    arrived = pipeline.latest_frame.received
    pipeline.set_frame(frames[0], T0 + 4, "camera")
    result = pipeline.answer(2, commands[0], T0 + 5, arrived=arrived, reset=True)
    assert result.frame_stamp == T0 + 3 and "clip" not in result.timings
    assert pipeline.predictor.keys == [T0, T0 + 1, T0 + 3]
    assert_same_answer(result, fresh_answer(demo, frames[1], T0 + 3, commands[0]))


def test_the_image_key_refuses_an_answer_on_a_frame_set_behind_the_pipelines_back(demo):
    _, _, frames, commands = demo
    pipeline = make_pipeline(demo)
    pipeline.set_frame(frames[0], T0, "camera")
    pipeline.pre_encode_newest()
    pipeline.predictor.set_image(frames[1], key="someone else's")  # the pipeline does not know
    refused = pipeline.answer(1, commands[0], T0)
    assert refused.status == Status.ERROR and "someone else's" in refused.error and refused.masks.shape[0] == 0
    answered = pipeline.answer(2, commands[0], T0, reset=True)  # encodes its frame again
    assert_same_answer(answered, fresh_answer(demo, frames[0], T0, commands[0]))


def test_a_command_arriving_during_pre_encoding_waits_for_that_one_encode_at_most(demo):
    """The command waits for the running encode only: frames arriving meanwhile queue nothing."""
    _, _, frames, commands = demo
    pipeline = make_pipeline(demo)
    predictor = pipeline.predictor
    worker = CommandWorker(pipeline)
    try:
        predictor.hold.clear()
        pipeline.set_frame(frames[1], T0, "camera")
        worker.frame_arrived()
        assert predictor.encoding.wait(WAIT)  # pre-encoding of T0 is running (held)
        # The command arrives during it: answered on T0, the newest frame when it came ...
        first = worker.submit(1, commands[0], T0 + 1)
        # ... while newer frames arrive: none is pre-encoded before the command.
        for k in range(2, 5):
            pipeline.set_frame(frames[k % 2], T0 + k, "camera")
            worker.frame_arrived()
        assert worker.pending() == 1
        predictor.hold.set()
        result = first.wait(WAIT)
        assert predictor.keys == [T0]  # the running encode, and no other, came before the command
        assert result.frame_stamp == T0 and "clip" not in result.timings
        # A command on a frame other than the one being pre-encoded (its own image) waits for
        # that encode, then encodes its own: one encode before its own, no more.
        predictor.hold.clear()
        pipeline.set_frame(frames[0], T0 + 5, "camera")
        worker.frame_arrived()
        assert predictor.encoding.wait(WAIT)
        second = worker.submit(2, commands[0], T0 + 6, image=frames[1], reset=True)
        worker.frame_arrived()
        predictor.hold.set()
        result = second.wait(WAIT)
    finally:
        predictor.hold.set()
        worker.stop()
    assert predictor.keys[1:3] == [T0 + 5, T0 + 6] and result.frame_stamp == T0 + 6
    assert_same_answer(result, fresh_answer(demo, frames[1], T0 + 6, commands[0]))


def test_warm_up_runs_every_stage_and_leaves_no_image_set(demo):
    _, _, frames, commands = demo
    pipeline = make_pipeline(demo)
    pipeline.set_frame(frames[0], T0, "camera")
    pipeline.pre_encode_newest()
    timings = pipeline.warm_up((48, 64))
    stages = {"model_image_clip", "model_image_sam_encoder", "model_prefill", "model_mask_decoder", "regions"}
    assert stages <= set(timings)
    assert timings["total"] >= timings["regions"] > 0
    result = pipeline.answer(1, commands[0], T0)  # the warm-up's gray image is not answered on
    assert "clip" in result.timings
    assert_same_answer(result, fresh_answer(demo, frames[0], T0, commands[0]))
