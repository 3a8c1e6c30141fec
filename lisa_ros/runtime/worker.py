"""The command worker: answers commands one at a time on its own thread, in submission order,
and in between tracks the live targets on new frames and encodes the newest frame ahead.

A single-thread `concurrent.futures.ThreadPoolExecutor` gives the order, the thread and
the cancellation of queued commands; this module adds what a robot needs on top: a bound
on the commands waiting, exactly one `Result` per command (also for a refused, canceled or
stopped one), cancellation of the running command at its next stage, and callbacks that
cannot take the thread down.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
import traceback
from typing import Callable

from .tracking import TrackingUpdate
from .types import Result, Stage, error_result, quote_command

STOPPED = "the node stopped before answering"
DEACTIVATED = "the node was deactivated before answering"


class Job:
    """One submitted command: its arguments and (once done) its result.

    accepted (bool): False when it was refused before it was queued (queue full, worker
        stopped, node inactive); it then already holds its ERROR result.
    result (Result | None): set once, before `on_result` is called.
    """

    def __init__(
        self,
        command_id,
        command,
        stamp,
        image=None,
        reset=False,
        on_result=None,
        on_progress=None,
        on_early=None,
        on_text=None,
    ):
        self.command_id = command_id
        self.command = command
        self.stamp = stamp
        self.image = image
        self.reset = reset
        self.on_result = on_result
        self.on_progress = on_progress
        self.on_early = on_early
        self.on_text = on_text
        self.accepted = True
        self.result: Result | None = None
        self.submitted = time.perf_counter()
        self.cancel_requested = False
        self._queued: concurrent.futures.Future | None = None  # the executor's future while queued/running
        self._outcome: concurrent.futures.Future = concurrent.futures.Future()  # resolved when delivered
        self.drop_reason = STOPPED  # the error of a queued job that never runs

    @classmethod
    def rejected(cls, result: Result, on_result: Callable[[Result], None] | None = None) -> "Job":
        """A command refused before it was queued: a done job holding `result` (delivered to on_result now)."""
        job = cls(result.command_id, result.command, result.stamp, on_result=on_result)
        job.accepted = False
        job.finish(result)
        return job

    def wait(self, timeout: float | None = None) -> Result | None:
        """Block until the result is delivered; returns it (None on timeout)."""
        try:
            return self._outcome.result(timeout)
        except concurrent.futures.TimeoutError:
            return None

    def done(self) -> bool:
        return self._outcome.done()

    def cancel(self) -> bool:
        """Cancel the command. A queued one is removed and gets a canceled result now
        (returns True); a running one stops at its next stage boundary (returns False)."""
        self.cancel_requested = True
        self.drop_reason = "canceled before it was answered"
        return self._queued is not None and self._queued.cancel()

    def finish(self, result: Result) -> None:
        """Deliver `result`: store it, call on_result, then wake `wait`."""
        self.result = result
        try:
            if self.on_result is not None:
                self.on_result(result)
        finally:
            self._outcome.set_result(result)


class CommandWorker:
    """Answers submitted commands one at a time on its own thread, in submission order.

    At most `queue_size` commands wait; a command submitted to a full queue is answered
    at once with an ERROR result. Results go to the job's `on_result` callback (on the
    worker thread, or the submitting thread for immediate errors).

    Between commands the thread tracks the live targets (the pipeline's tracker) and, with the
    pipeline's pre_encode, encodes the newest frame ahead of the commands (reusing the SAM
    embedding tracking computed for it): `frame_arrived` queues one such step for the newest
    frame unless one is queued already or a command waits, and the step skips what a command
    arriving meanwhile would wait for. So a command waits behind at most one tracking step and
    one encode, and frames are never queued. Tracking updates go to `on_track`.

    The pipeline's `model_lock` (when it has one) is held around every model call: the
    workers of pipelines that share one loaded model (one per camera) take turns.
    """

    def __init__(
        self,
        pipeline,
        queue_size: int = 64,
        logger=None,
        on_track: Callable[[TrackingUpdate], None] | None = None,
    ):
        self.pipeline = pipeline
        self.queue_size = int(queue_size)
        self.logger = logger or logging.getLogger(__name__)
        self.on_track = on_track
        self._step_queued = False  # a tracking/pre-encoding step is queued
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lisa-command-worker")
        self._lock = threading.Lock()
        self._waiting = 0
        self._stopping = False
        self._unfinished: dict[concurrent.futures.Future, Job | None] = {}  # queued or running; None: tracking
        self._model_lock = getattr(pipeline, "model_lock", None) or contextlib.nullcontext()

    def submit(
        self,
        command_id: int,
        command: str,
        stamp: int,
        image=None,
        reset: bool = False,
        on_result: Callable[[Result], None] | None = None,
        on_progress: Callable[[Stage, str], None] | None = None,
        on_early: Callable[[Result], None] | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Job:
        """Queue a command (arguments as Pipeline.answer). Returns its Job; `job.accepted`
        is False when the queue was full or the worker stopped (the job then already
        holds its ERROR result, delivered to on_result before this returns). on_early
        and on_text are called on the worker thread; what they raise is logged."""
        job = Job(command_id, command, stamp, image, reset, on_result, on_progress, on_early, on_text)
        with self._lock:
            if self._stopping:
                reason = "the node is shutting down"
            elif self._waiting >= self.queue_size:
                reason = f"too many commands waiting ({self.queue_size}, queue_size); try again later"
            else:
                reason = ""
                self._waiting += 1
                job._queued = future = self._executor.submit(self._run, job)
                self._unfinished[future] = job
        if not reason:  # outside the lock: a future already done calls back at once
            future.add_done_callback(lambda done: self._settle(job, done))
        else:
            self.logger.warning(f"command {command_id} {quote_command(command)}: {reason}")
            job.accepted = False
            self._deliver(job, error_result(command_id, command, stamp, reason))
            return job
        if on_progress is not None:
            self._progress(job, Stage.QUEUED, "")
        return job

    def frame_arrived(self) -> None:
        """A new camera frame reached the pipeline: track the live targets on it and encode it
        ahead of the commands (pre_encode) when the thread is free."""
        with self._lock:
            if self._stopping or self._step_queued or self._waiting:
                return
            if not self.pipeline.tracker.due and self.pipeline.pre_encode_due() is None:
                return
            self._step_queued = True
            future = self._executor.submit(self._between_commands)
            self._unfinished[future] = None
        future.add_done_callback(self._forget)

    def _between_commands(self) -> None:
        """Track the live targets on the newest frame, then encode it ahead; a command that came
        in meanwhile goes first."""
        with self._lock:
            self._step_queued = False
            if self._waiting:
                return
        try:
            with self._model_lock:
                update = self.pipeline.tracker.track()
            if update is not None and self.on_track is not None:
                self.on_track(update)
        except Exception:  # Tracker.track does not raise; a callback might: keep the thread alive
            self.logger.error(f"tracking failed: {traceback.format_exc()}")
        with self._lock:
            if self._waiting:
                return
        try:
            with self._model_lock:
                self.pipeline.pre_encode_newest()
        except Exception:  # the command on this frame encodes it again (and reports a failure)
            self.logger.error(f"encoding the newest image ahead failed: {traceback.format_exc()}")

    def _forget(self, future: concurrent.futures.Future) -> None:
        with self._lock:
            self._unfinished.pop(future, None)
            if future.cancelled():
                self._step_queued = False

    def pending(self) -> int:
        """Commands waiting (not counting the one being answered)."""
        with self._lock:
            return self._waiting

    def drop_queued(self, reason: str, timeout: float = 30.0, cancel_running: bool = False) -> bool:
        """Answer every queued command with an ERROR result saying `reason` and wait for the
        running one to be answered (with `cancel_running`, it stops at its next token or stage
        with a canceled result: a process asked to stop does not wait for a long answer); the
        worker keeps accepting commands.

        Returns False when the running command was not answered within `timeout` seconds.
        """
        with self._lock:
            unfinished = dict(self._unfinished)
        for future, job in unfinished.items():
            if job is not None:
                job.drop_reason = reason
                job.cancel_requested = job.cancel_requested or (cancel_running and future.running())
            future.cancel()  # a queued one: _settle answers it; the running one goes on
        _, running = concurrent.futures.wait(list(unfinished), timeout)
        if running:
            self.logger.warning(f"the running command was not answered within {timeout} s")
        return not running

    def stop(self, timeout: float = 30.0) -> None:
        """Answer queued commands with an ERROR result, let the running one finish, end the thread."""
        with self._lock:
            self._stopping = True
            unfinished = list(self._unfinished)
        self._executor.shutdown(wait=False, cancel_futures=True)
        _, running = concurrent.futures.wait(unfinished, timeout)
        if running:
            self.logger.warning(f"the command worker did not stop within {timeout} s")

    def _run(self, job: Job) -> None:
        with self._lock:
            self._waiting -= 1
        waited = time.perf_counter() - job.submitted
        try:
            with self._model_lock:
                result = self.pipeline.answer(
                    job.command_id,
                    job.command,
                    job.stamp,
                    image=job.image,
                    reset=job.reset,
                    progress=(lambda stage, text: self._progress(job, stage, text)) if job.on_progress else None,
                    should_cancel=lambda: job.cancel_requested,
                    on_early=self._guarded(job, job.on_early, "early result"),
                    on_text=self._guarded(job, job.on_text, "text"),
                    arrived=job.submitted,
                )
        except Exception as error:  # Pipeline.answer does not raise; a stand-in might: keep the thread alive
            self.logger.error(f"command {job.command_id} failed: {traceback.format_exc()}")
            result = error_result(job.command_id, job.command, job.stamp, f"failed: {type(error).__name__}: {error}")
        if result.canceled and job.drop_reason == STOPPED:  # stopped mid-answer by drop_queued(cancel_running)
            result.error = STOPPED
        result.timings = {"queue_wait": waited, **result.timings}
        self._deliver(job, result)

    def _settle(self, job: Job, future: concurrent.futures.Future) -> None:
        """The executor is done with `job`: a queued job that never ran still gets its ERROR result."""
        with self._lock:
            self._unfinished.pop(future, None)
            if future.cancelled():
                self._waiting -= 1
        if future.cancelled():
            canceled = job.cancel_requested
            self._deliver(job, error_result(job.command_id, job.command, job.stamp, job.drop_reason, canceled=canceled))

    def _deliver(self, job: Job, result: Result) -> None:
        try:
            job.finish(result)
        except Exception:
            self.logger.error(f"the result callback of command {job.command_id} failed: {traceback.format_exc()}")

    def _guarded(self, job: Job, callback: Callable | None, what: str) -> Callable | None:
        """`callback`, logging what it raises (an exception would abandon the answer)."""
        if callback is None:
            return None

        def guarded(value) -> None:
            try:
                callback(value)
            except Exception:
                self.logger.error(f"the {what} callback of command {job.command_id} failed: {traceback.format_exc()}")

        return guarded

    def _progress(self, job: Job, stage: Stage, text: str) -> None:
        try:
            job.on_progress(stage, text)
        except Exception:
            self.logger.error(f"the progress callback of command {job.command_id} failed: {traceback.format_exc()}")
