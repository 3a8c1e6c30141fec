"""lisa_model: LISA reasoning segmentation (multimodal LLaMA + SAM), ROS-free."""

from .build import DEMO_MODEL_DIR, build_lisa, build_lisa_tiny, build_lisa_tiny_llava15, lisa_model_registry
from .checkpoint import CheckpointError, load_lisa, save_lisa
from .config import LisaConfig
from .decoding import DECODE_MODES
from .modeling.lisa import LisaModel
from .predictor import ContextOverflowError, EarlyMask, ImageEmbedding, LisaPredictor, Prediction
from .processing.conversation import Conversation

__all__ = [
    "DECODE_MODES",
    "DEMO_MODEL_DIR",
    "CheckpointError",
    "ContextOverflowError",
    "Conversation",
    "EarlyMask",
    "ImageEmbedding",
    "LisaConfig",
    "LisaModel",
    "LisaPredictor",
    "Prediction",
    "build_lisa",
    "build_lisa_tiny",
    "build_lisa_tiny_llava15",
    "lisa_model_registry",
    "load_lisa",
    "save_lisa",
]
