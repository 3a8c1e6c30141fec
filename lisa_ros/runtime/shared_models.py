"""Loaded models shared by the pipelines of one process: one model for several cameras.

A multi-camera lisa_node runs one pipeline per camera (each its own frames, conversation,
live targets and predictor state) on one loaded model. `ModelRegistry.acquire` loads a
model the first time its parameters ask for it and hands the same one to later callers;
`release` drops it when its last user is done. Model use is serialised by the entry's
`lock` (the command workers of all cameras take it around every model call).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

# The parameters that select the loaded model; pipelines that agree on them share it.
MODEL_PARAMETERS = ("model_path", "vision_tower_path", "device", "precision", "conversation_template")


@dataclass
class SharedModel:
    """One loaded model and its tokenizer, with the lock its users take around model calls."""

    model: object
    tokenizer: object
    device: str
    key: tuple
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


class ModelRegistry:
    """The models loaded in this process, by the values of MODEL_PARAMETERS; thread-safe.

    loads (int): how many models were loaded (not handed out again) so far.
    """

    def __init__(self):
        self._models: dict[tuple, SharedModel] = {}
        self._lock = threading.Lock()
        self.loads = 0

    def acquire(self, values: dict, logger=None) -> SharedModel:
        """The model `values` (validated parameter values) select: loaded now, or the one loaded before.

        Raises whatever loading raises (ValueError for a device that is not there, missing files, ...).
        """
        key = tuple(values[name] for name in MODEL_PARAMETERS)
        with self._lock:  # a second camera configuring meanwhile waits for this load, then shares it
            shared = self._models.get(key)
            if shared is None:
                shared = self._load(values, key, logger or logging.getLogger(__name__))
                self._models[key] = shared
                self.loads += 1
            shared.users += 1
            return shared

    def release(self, shared: SharedModel) -> None:
        """One user is done with `shared`; the last one frees it (and the CUDA cache)."""
        with self._lock:
            shared.users -= 1
            if shared.users > 0 or self._models.get(shared.key) is not shared:
                return
            del self._models[shared.key]
        on_cuda = shared.device == "cuda"
        shared.model = shared.tokenizer = None
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    @staticmethod
    def _load(values: dict, key: tuple, logger) -> SharedModel:
        from lisa_model import DEMO_MODEL_DIR, load_lisa

        from .pipeline import resolve_device

        device = resolve_device(values["device"])
        model_path = values["model_path"]
        if not model_path:
            logger.warning(
                f"model_path is empty: using the built-in demo model ({DEMO_MODEL_DIR}), a small LISA trained "
                "only on the synthetic table scenes of lisa_ros.synthetic.scenes. Set model_path to a LISA checkpoint."
            )
            model_path = DEMO_MODEL_DIR
        start = time.perf_counter()
        model, tokenizer = load_lisa(
            model_path,
            vision_tower=values["vision_tower_path"] or None,
            precision=None if values["precision"] == "auto" else values["precision"],
            device=device,
            conversation_template=values["conversation_template"] or None,
        )
        logger.info(f"loaded {model_path} on {device} in {time.perf_counter() - start:.1f} s")
        return SharedModel(model, tokenizer, device, key)
