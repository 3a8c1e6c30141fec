"""Shared fixtures: tiny random-weight models and a tiny model trained on a synthetic batch."""

import pytest
import torch

from lisa_model import build_lisa_tiny
from tests.helpers.model import synthetic_batch, train


@pytest.fixture(scope="session")
def tiny():
    """A tiny random-weight model and its tokenizer (do not train or move it)."""
    return build_lisa_tiny(seed=0)


@pytest.fixture(scope="session")
def trained_tiny():
    """A tiny model trained on LESSONS: (model, tokenizer, scenes, loss history)."""
    torch.manual_seed(0)
    model, tokenizer = build_lisa_tiny(seed=1)
    batch, scenes = synthetic_batch(model, tokenizer)
    history = train(model, batch, steps=150)
    return model, tokenizer, scenes, history


@pytest.fixture(scope="session")
def trained_tiny_checkpoint(trained_tiny, tmp_path_factory):
    """The trained tiny model saved in the released layout: (model folder, CLIP folder)."""
    from lisa_model.checkpoint import save_lisa

    model, tokenizer, _, _ = trained_tiny
    directory = tmp_path_factory.mktemp("trained_tiny")
    model.vision_tower.save_pretrained(directory / "clip")
    save_lisa(model, tokenizer, directory / "model", vision_tower=str(directory / "clip"))
    return directory / "model", directory / "clip"
