"""lisa_ros.runtime.pipeline without ROS: validation, lazy encoding, conversation, worker order and limits."""

import logging
import threading
import types

import numpy as np
import pytest

from lisa_model import ContextOverflowError, LisaPredictor, Prediction
from lisa_ros.runtime.codec import ImageError
from lisa_ros.runtime.pipeline import Pipeline
from lisa_ros.runtime.types import NS_PER_S, Frame, Result, Stage, Status, error_result, mask_boxes
from lisa_ros.runtime.worker import CommandWorker

T0 = 1_700_000_000 * NS_PER_S + 123_456_789  # an arbitrary stamp, nanoseconds


class CountingPredictor:
    """The real tiny predictor, counting set_image calls (and failing on demand)."""

    def __init__(self, predictor):
        self.inner = predictor
        self.model = predictor.model
        self.encoded = 0
        self.fail_next = None

    @property
    def image_timings(self):
        return self.inner.image_timings

    def set_image(self, image, **kwargs):
        self.encoded += 1
        self.inner.set_image(image, **kwargs)

    def predict(self, command, conversation=None, **kwargs):
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        return self.inner.predict(command, conversation, **kwargs)


class ScriptedPredictor:
    """Answers every command with a fixed text and the given masks (no model)."""

    def __init__(self, text, masks):
        self.model = types.SimpleNamespace(config=types.SimpleNamespace(conversation_template="llava_v1"))
        self.text, self.masks = text, masks
        self.image_timings = {"clip": 0.0, "sam_encoder": 0.0}

    def set_image(self, image, **kwargs):
        self.shape = image.shape[:2]

    def predict(self, command, conversation=None, **kwargs):
        masks = np.asarray(self.masks, bool)
        conversation.append(command, self.text, False)
        return Prediction(
            self.text, masks, masks.astype(np.float32), np.full(len(masks), 0.5, np.float32), {"decode": 0.0}
        )


@pytest.fixture
def predictor(tiny):
    model, tokenizer = tiny
    return CountingPredictor(LisaPredictor(model, tokenizer, max_new_tokens=4))


@pytest.fixture
def pipeline(predictor):
    return Pipeline(predictor, max_image_age=1.0, max_command_length=50)


def image(height=48, width=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_answers_on_the_newest_frame(pipeline):
    pipeline.set_frame(image(), T0, "camera")
    result = pipeline.answer(7, "segment the cup", T0 + NS_PER_S // 10)
    assert result.status in (Status.OK, Status.NO_TARGET), result.error
    assert result.ok and result.error == ""
    assert (result.command_id, result.command) == (7, "segment the cup")
    assert (result.stamp, result.frame_stamp, result.frame_id) == (T0 + NS_PER_S // 10, T0, "camera")
    assert result.answer.strip()
    n = result.masks.shape[0]
    assert result.masks.shape == (n, 48, 64) and result.masks.dtype == bool
    assert result.scores.shape == (n,) and result.scores.dtype == np.float32
    assert result.boxes.shape == (n, 4) and result.boxes.dtype == np.int32
    assert result.status == (Status.OK if n else Status.NO_TARGET)
    assert {"clip", "sam_encoder", "prefill", "total"} <= set(result.timings)
    assert result.image.shape == (48, 64, 3)


def test_status_ok_with_masks_and_boxes():
    masks = np.zeros((2, 10, 20), bool)
    masks[0, 2:5, 3:9] = True
    pipeline = Pipeline(ScriptedPredictor("It is [SEG] and [SEG].", masks), max_image_age=0)
    pipeline.set_frame(image(10, 20), T0)
    result = pipeline.answer(1, "both", T0)
    assert result.status == Status.OK
    assert result.boxes.tolist() == [[3, 2, 8, 4], [-1, -1, -1, -1]]
    assert result.scores.tolist() == [0.5, 0.5]


def test_mask_boxes():
    masks = np.zeros((3, 6, 7), bool)
    masks[0, 1, 2] = True
    masks[1, :, :] = True
    masks[2, 0:3, 6] = True
    masks[2, 5, 0] = True
    assert mask_boxes(masks).tolist() == [[2, 1, 2, 1], [0, 0, 6, 5], [0, 0, 6, 5]]
    assert mask_boxes(np.zeros((0, 4, 4), bool)).shape == (0, 4)


@pytest.mark.parametrize(
    "command, message",
    [
        ("", "empty"),
        ("  \n\t ", "empty"),
        ("x" * 51, "51 characters; at most 50"),
        (None, "must be text"),
    ],
)
def test_bad_commands_are_error_results(pipeline, predictor, command, message):
    pipeline.set_frame(image(), T0)
    result = pipeline.answer(3, command, T0)
    assert result.status == Status.ERROR and message in result.error
    assert result.command_id == 3
    assert predictor.encoded == 0


def test_command_before_any_image(pipeline):
    result = pipeline.answer(1, "segment the cup", T0)
    assert result.status == Status.ERROR and "no image" in result.error
    assert result.frame_stamp == 0 and result.masks.shape[0] == 0


def test_image_age(pipeline, predictor):
    pipeline.set_frame(image(), T0)
    old = pipeline.answer(1, "segment the cup", T0 + 2 * NS_PER_S)
    assert old.status == Status.ERROR and "no recent image" in old.error and "max_image_age" in old.error
    assert old.frame_stamp == T0
    assert pipeline.answer(2, "segment the cup", T0 + NS_PER_S).ok  # exactly at the limit
    pipeline.max_image_age = 0  # any age
    assert pipeline.answer(3, "segment the cup", T0 + 3600 * NS_PER_S).ok


def test_image_in_the_request_overrides_the_cache(pipeline):
    pipeline.set_frame(image(48, 64), T0)
    result = pipeline.answer(1, "segment the cup", T0 + 10 * NS_PER_S, image=image(30, 40))
    assert result.ok and result.masks.shape[1:] == (30, 40)
    assert result.frame_stamp == T0 + 10 * NS_PER_S  # the request's image has the command's stamp
    framed = pipeline.answer(2, "segment the cup", T0, image=Frame(stamp=5, frame_id="hand", rgb=image(8, 8)))
    assert framed.ok and (framed.frame_stamp, framed.frame_id) == (5, "hand")


def test_encodes_lazily_once_per_frame(pipeline, predictor):
    decoded = []

    def decoder(array):
        def decode():
            decoded.append(array.shape)
            return array

        return decode

    for k in range(5):  # frames nobody asks about are never decoded or encoded
        pipeline.set_frame(decoder(image(seed=k)), T0 + k)
    assert decoded == [] and predictor.encoded == 0
    assert pipeline.answer(1, "segment the cup", T0 + 5).ok
    assert pipeline.answer(2, "and the plate?", T0 + 6).ok
    assert decoded == [(48, 64, 3)] and predictor.encoded == 1
    first, second = (pipeline.answer(k, "segment the cup", T0) for k in (3, 4))
    assert "clip" not in first.timings and "clip" not in second.timings
    pipeline.set_frame(image(seed=9), T0 + 7)
    assert "clip" in pipeline.answer(5, "segment the cup", T0 + 8).timings
    assert predictor.encoded == 2


def test_invalid_frames_are_error_results(pipeline):
    def broken():
        raise ImageError("unsupported image encoding '8UC3'")

    pipeline.set_frame(broken, T0, "camera")
    result = pipeline.answer(1, "segment the cup", T0)
    assert result.status == Status.ERROR and "invalid image" in result.error and "8UC3" in result.error
    assert (result.frame_stamp, result.frame_id) == (T0, "camera")
    pipeline.set_frame(np.zeros((0, 5, 3), np.uint8), T0)
    assert "empty" in pipeline.answer(2, "segment the cup", T0).error
    pipeline.set_frame(np.zeros((4, 5), np.float32), T0)
    assert "uint8 [H,W,3]" in pipeline.answer(3, "segment the cup", T0).error
    pipeline.set_frame(image(), T0)
    assert pipeline.answer(5, "segment the cup", T0).ok


def test_oversized_and_elongated_images_are_refused_before_the_model_sees_them(pipeline, predictor):
    pipeline.set_frame(np.zeros((1, 30000, 3), np.uint8), T0)
    result = pipeline.answer(1, "segment the cup", T0)
    assert result.status == Status.ERROR and "invalid image: image is too elongated" in result.error
    pipeline.max_image_pixels = 48 * 64 - 1
    pipeline.set_frame(image(), T0)
    assert "invalid image: image is too large" in pipeline.answer(2, "segment the cup", T0).error
    assert predictor.encoded == 0
    pipeline.max_image_pixels = 48 * 64
    assert pipeline.answer(3, "segment the cup", T0).ok


def test_model_failure_is_an_error_result_and_the_next_command_works(pipeline, predictor, caplog):
    pipeline.set_frame(image(), T0)
    predictor.fail_next = RuntimeError("CUDA out of memory")
    with caplog.at_level(logging.ERROR):
        result = pipeline.answer(1, "segment the cup", T0)
    assert result.status == Status.ERROR and result.error == "model failed: RuntimeError: CUDA out of memory"
    assert "CUDA out of memory" in caplog.text
    assert pipeline.answer(2, "segment the cup", T0).ok


def test_conversation_persists_until_reset(pipeline):
    pipeline.set_frame(image(), T0)
    for k in range(3):
        assert pipeline.answer(k, f"command {k}", T0).ok
    assert len(pipeline.conversation.turns) == 3
    pipeline.reset_conversation()
    assert pipeline.answer(3, "again", T0).ok
    assert len(pipeline.conversation.turns) == 1
    assert pipeline.answer(4, "and then", T0, reset=True).ok
    assert len(pipeline.conversation.turns) == 1
    pipeline.keep_conversation = False
    pipeline.answer(5, "one", T0)
    pipeline.answer(6, "two", T0)
    assert len(pipeline.conversation.turns) == 1


def test_a_conversation_that_outgrows_the_context_starts_over(pipeline, predictor):
    pipeline.set_frame(image(), T0)
    assert pipeline.answer(1, "first", T0).ok
    predictor.fail_next = ContextOverflowError("the prompt has 3000 tokens; the model's context is 2048")
    result = pipeline.answer(2, "second", T0)
    assert result.ok, result.error
    assert len(pipeline.conversation.turns) == 1
    assert result.conversation_reset and not pipeline.answer(3, "third", T0).conversation_reset
    assert "its 1 earlier turns were dropped" in result.notice


def test_other_value_errors_are_not_taken_for_a_context_overflow(pipeline, predictor):
    """Only ContextOverflowError starts a new conversation, whatever another error's message says."""
    pipeline.set_frame(image(), T0)
    assert pipeline.answer(1, "first", T0).ok
    predictor.fail_next = ValueError("bad context manager")
    result = pipeline.answer(2, "second", T0)
    assert result.status == Status.ERROR and "bad context manager" in result.error
    assert len(pipeline.conversation.turns) == 1  # the conversation was kept


def test_progress_and_cancel(pipeline):
    pipeline.set_frame(image(), T0)
    stages = []
    result = pipeline.answer(1, "segment the cup", T0, progress=lambda stage, text: stages.append((stage, text)))
    assert [stage for stage, _ in stages] == [Stage.ENCODING_IMAGE, Stage.GENERATING, Stage.DONE]
    assert stages[-1][1] == result.answer
    canceled = pipeline.answer(2, "segment the cup", T0, should_cancel=lambda: True)
    assert canceled.status == Status.ERROR and canceled.canceled and canceled.error == "canceled"


def test_from_parameters_defaults_to_the_built_in_demo_model(caplog):
    from lisa_model import DEMO_MODEL_DIR

    with caplog.at_level(logging.WARNING):
        pipeline = Pipeline.from_parameters({"max_new_tokens": 3, "device": "cpu", "max_image_age": 0.5})
    assert "built-in demo model" in caplog.text and str(DEMO_MODEL_DIR) in caplog.text
    assert pipeline.predictor.model.config.sam_image_size == 256  # the demo shape, not the tiny one
    assert pipeline.predictor.max_new_tokens == 3 and pipeline.max_image_age == 0.5
    pipeline.set_frame(image(), T0)
    assert pipeline.answer(1, "segment the cup", T0).ok
    pipeline.close()
    assert pipeline.predictor is None
    with pytest.raises(ValueError, match="max_new_tokens"):
        Pipeline.from_parameters({"max_new_tokens": 0})
    with pytest.raises(ValueError, match="precision"):
        Pipeline.from_parameters({"precision": "fp8"})


# --- CommandWorker -----------------------------------------------------------------------


class GatedPipeline:
    """Stands in for Pipeline: answers instantly, but only while the gate is open."""

    def __init__(self):
        self.gate = threading.Event()
        self.started = threading.Event()
        self.answered = []

    def answer(self, command_id, command, stamp_now, image=None, reset=False, progress=None, should_cancel=None,
               **kwargs):  # fmt: skip
        self.started.set()
        self.gate.wait(10)
        if should_cancel and should_cancel():
            return error_result(command_id, command, stamp_now, "canceled", canceled=True)
        self.answered.append(command_id)
        if progress:
            progress(Stage.DONE, "done")
        return Result(command_id, command, stamp_now, status=Status.NO_TARGET, answer="done")


def test_worker_delivers_every_result_in_order(pipeline):
    pipeline.set_frame(image(), T0)
    worker = CommandWorker(pipeline, queue_size=64)
    results = []
    done = threading.Event()

    def collect(result):
        results.append(result)
        if len(results) == 30:
            done.set()

    try:
        jobs = [worker.submit(k, "" if k % 7 == 3 else f"command {k}", T0, on_result=collect) for k in range(30)]
        assert all(job.accepted for job in jobs)
        assert done.wait(60), f"only {len(results)} of 30 results"
    finally:
        worker.stop()
    assert [r.command_id for r in results] == list(range(30))
    assert [r.status == Status.ERROR for r in results] == [k % 7 == 3 for k in range(30)]
    assert all("queue_wait" in r.timings for r in results)
    assert jobs[5].result is results[5] and jobs[5].wait(0) is results[5]


def test_worker_rejects_commands_beyond_the_queue_bound():
    fake = GatedPipeline()
    worker = CommandWorker(fake, queue_size=2)
    results = []
    try:
        running = worker.submit(0, "zero", T0, on_result=results.append)
        assert fake.started.wait(5)
        queued = [worker.submit(k, f"c{k}", T0, on_result=results.append) for k in (1, 2)]
        rejected = worker.submit(3, "c3", T0, on_result=results.append)
        assert running.accepted and all(job.accepted for job in queued)
        assert not rejected.accepted and rejected.done()
        assert rejected.result.status == Status.ERROR and "queue_size" in rejected.result.error
        assert [r.command_id for r in results] == [3]  # the rejection is delivered at once
        fake.gate.set()
        assert all(job.wait(5) for job in queued)
    finally:
        fake.gate.set()
        worker.stop()
    assert [r.command_id for r in results] == [3, 0, 1, 2]


def test_worker_cancel():
    fake = GatedPipeline()
    worker = CommandWorker(fake, queue_size=8)
    stages = []
    try:
        running = worker.submit(0, "zero", T0, on_progress=lambda stage, text: stages.append(stage))
        assert fake.started.wait(5)
        queued = worker.submit(1, "one", T0)
        assert queued.cancel() is True  # removed from the queue, answered at once
        assert queued.done() and queued.result.canceled and queued.result.status == Status.ERROR
        assert running.cancel() is False  # running: stops at its next stage boundary
        fake.gate.set()
        assert running.wait(5).canceled
        later = worker.submit(2, "two", T0)
        assert later.wait(5).status == Status.NO_TARGET
    finally:
        fake.gate.set()
        worker.stop()
    assert fake.answered == [2]
    assert stages == [Stage.QUEUED]


def test_worker_stop_answers_what_is_queued():
    fake = GatedPipeline()
    worker = CommandWorker(fake, queue_size=8)
    running = worker.submit(0, "zero", T0)
    assert fake.started.wait(5)
    queued = [worker.submit(k, f"c{k}", T0) for k in (1, 2)]
    threading.Timer(0.2, fake.gate.set).start()
    worker.stop()
    assert running.result.status == Status.NO_TARGET
    assert all(job.result.status == Status.ERROR and "stopped" in job.result.error for job in queued)
    late = worker.submit(9, "late", T0)
    assert not late.accepted and "shutting down" in late.result.error


def test_callback_errors_do_not_stop_the_worker(pipeline, caplog):
    pipeline.set_frame(image(), T0)
    worker = CommandWorker(pipeline)

    def explode(result):
        raise RuntimeError("subscriber gone")

    try:
        with caplog.at_level(logging.ERROR):
            worker.submit(1, "one", T0, on_result=explode).wait(30)
        assert worker.submit(2, "two", T0).wait(30).ok
    finally:
        worker.stop()
    assert "subscriber gone" in caplog.text


def test_worker_survives_a_raising_pipeline(caplog):
    fake = GatedPipeline()
    fake.gate.set()
    answer = fake.answer
    calls = []

    def flaky(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 1:
            raise RuntimeError("boom")
        return answer(*args, **kwargs)

    fake.answer = flaky
    worker = CommandWorker(fake)
    try:
        with caplog.at_level(logging.ERROR):
            first = worker.submit(1, "one", T0).wait(5)
        assert first.status == Status.ERROR and "boom" in first.error
        assert worker.submit(2, "two", T0).wait(5).status == Status.NO_TARGET
    finally:
        worker.stop()


def test_a_refused_command_is_done_even_when_its_callback_raises(caplog):
    fake = GatedPipeline()
    worker = CommandWorker(fake, queue_size=1)

    def explode(result):
        raise RuntimeError("subscriber gone")

    try:
        worker.submit(0, "zero", T0)
        assert fake.started.wait(5)
        worker.submit(1, "one", T0)
        with caplog.at_level(logging.ERROR):
            refused = worker.submit(2, "two", T0, on_result=explode)
        assert not refused.accepted and refused.wait(0).status == Status.ERROR
    finally:
        fake.gate.set()
        worker.stop()
    assert "subscriber gone" in caplog.text
