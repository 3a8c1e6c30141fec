"""SAM's image embedding, computed now or beside the language model (a thread; on CUDA a second stream)."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


@dataclass
class ImageEmbedding:
    """SAM's embedding of one image, with the sizes needed to bring masks back to it.

    embedding (Tensor [1,C,h,w]): the SAM image encoder's output.
    resized_size ((int, int)): the image's size inside SAM's padded square input.
    original_size ((int, int)): the image's own height and width.
    """

    embedding: torch.Tensor
    resized_size: tuple[int, int]
    original_size: tuple[int, int]


def finished(embedding: ImageEmbedding) -> Future:
    """A future that already holds `embedding`."""
    future: Future = Future()
    future.set_result(embedding)
    return future


class ConcurrentSamEncoder:
    """Runs SAM's image encoder on one worker thread, so CLIP and the language model's
    prefill (on the caller's thread) need not wait for it. On CUDA the worker enqueues
    on its own stream, so the two models' kernels can overlap on the GPU too.

    Arguments:
        embed (callable(image) -> ImageEmbedding): the encoder (LisaPredictor.embed_image).
        device (torch.device): the model's device.
    """

    def __init__(self, embed: Callable[[np.ndarray], ImageEmbedding], device: torch.device):
        self._embed = embed
        self._device = device
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sam-encoder")
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def submit(self, image: np.ndarray, timings: dict[str, float]) -> Future:
        """Start encoding `image`; the future's result is its ImageEmbedding. The encoder's
        seconds go to timings["sam_encoder"] when it is done."""
        consumer = torch.cuda.current_stream(self._device) if self._stream is not None else None
        return self._executor.submit(self._encode, image, timings, consumer)

    @torch.no_grad()  # grad mode is per thread
    def _encode(self, image: np.ndarray, timings: dict[str, float], consumer) -> ImageEmbedding:
        start = time.perf_counter()
        if self._stream is None:
            embedded = self._embed(image)
        else:
            with torch.cuda.stream(self._stream):
                self._stream.wait_stream(consumer)  # anything the caller queued before (weights moved, ...)
                embedded = self._embed(image)
            self._stream.synchronize()
            # The caller's stream reads the tensor: the allocator must not reuse it for this stream's work.
            embedded.embedding.record_stream(consumer)
        timings["sam_encoder"] = time.perf_counter() - start
        return embedded

    def close(self) -> None:
        self._executor.shutdown(wait=True)
