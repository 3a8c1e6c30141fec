"""LoRA recipe: exactly the intended parameters are trainable, and all of them get gradients."""

import re

import pytest
import torch

from lisa_model import build_lisa_tiny
from tests.helpers.train_runs import mini_root
from training.data.collate import collate, forward_kwargs
from training.data.reason_seg import ReasonSegDataset
from training.data.vqa import build_vqa_dataset
from training.lora import LoraSettings, apply_lora, merge_lora, trainable_parameter_names
from training.train import LOSS_WEIGHTS


@pytest.fixture(scope="module")
def lora_model():
    torch.manual_seed(0)
    model, tokenizer = build_lisa_tiny(seed=0)
    tuner = apply_lora(model)
    return model, tokenizer, tuner


def test_exactly_the_recipe_is_trainable(lora_model):
    model, tokenizer, _ = lora_model
    names = trainable_parameter_names(model)
    params = dict(model.named_parameters())
    hidden, vocab, layers = 64, len(tokenizer), 2

    lora = [n for n in names if ".lora_" in n]
    expected_lora = {f"language_model.model.layers.{i}.self_attn.{proj}.lora_{ab}.default.weight"
                     for i in range(layers) for proj in ("q_proj", "v_proj") for ab in "AB"}
    assert set(lora) == expected_lora
    assert sum(params[n].numel() for n in lora) == layers * 2 * (8 * hidden + hidden * 8)
    assert params["language_model.model.layers.0.self_attn.q_proj.lora_A.default.weight"].shape == (8, hidden)

    full = {
        "language_model.model.embed_tokens.weight": vocab * hidden,
        "language_model.lm_head.weight": vocab * hidden,
        "text_hidden_fcs.0.0.weight": hidden * hidden, "text_hidden_fcs.0.0.bias": hidden,
        "text_hidden_fcs.0.2.weight": 32 * hidden, "text_hidden_fcs.0.2.bias": 32,
    }
    for name, count in full.items():
        assert name in names and params[name].numel() == count, name
    decoder = [n for n in names if n.startswith("visual_model.mask_decoder.")]
    all_decoder = [n for n in params if n.startswith("visual_model.mask_decoder.")]
    iou_head = [n for n in all_decoder if ".iou_prediction_head." in n]
    assert iou_head and set(decoder) == set(all_decoder) - set(iou_head)
    assert set(names) == expected_lora | set(full) | set(decoder)
    assert sum(params[n].numel() for n in names) == 119_996  # the tiny model's recipe total

    frozen_prefixes = ("vision_tower.", "mm_projector.", "visual_model.image_encoder.",
                       "visual_model.prompt_encoder.", "visual_model.mask_decoder.iou_prediction_head.")
    for name, param in params.items():
        frozen_layer_part = r"language_model\.model\.layers\.\d+\.(self_attn\.(k|o)_proj|mlp|\w+_layernorm)\."
        if name.startswith(frozen_prefixes) or ".base_layer." in name or re.match(frozen_layer_part, name):
            assert not param.requires_grad, name
    # CLIP has q_proj/v_proj too: no adapters there.
    assert not any(".lora_" in n for n in params if n.startswith("vision_tower."))


def test_every_trainable_parameter_gets_a_gradient(lora_model, tmp_path_factory):
    # DDP without find_unused_parameters needs this (SAM's IoU head is frozen for it).
    model, tokenizer, _ = lora_model
    dataset = ReasonSegDataset(mini_root(tmp_path_factory) + "/reason_seg/ReasonSeg", "train", explanatory_ratio=None)
    batch = forward_kwargs(collate([dataset[0], dataset[1]], tokenizer, model.config))
    model.train()
    model.zero_grad()
    model(**batch, loss_weights=LOSS_WEIGHTS).loss.total.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad()
    model.eval()
    assert missing == []


def test_a_batch_without_seg_gives_the_seg_path_zero_gradients(lora_model, tmp_path_factory):
    # A text-only batch (VQA) never reaches the mask decoder; distributed engines still
    # need a gradient for every trainable parameter on every rank: an exact zero there.
    model, tokenizer, _ = lora_model
    root = mini_root(tmp_path_factory)
    dataset = build_vqa_dataset(root)
    batch = forward_kwargs(collate([dataset[0], dataset[1]], tokenizer, model.config))
    assert all(len(masks) == 0 for masks in batch["gt_masks"])
    model.train()
    model.zero_grad()
    model(**batch, loss_weights=LOSS_WEIGHTS).loss.total.backward()
    seg_path = {n: p.grad for n, p in model.named_parameters()
                if p.requires_grad and n.startswith(("visual_model.mask_decoder.", "text_hidden_fcs."))}
    language = [p.grad for n, p in model.named_parameters() if p.requires_grad and ".lora_B." in n]
    model.zero_grad()
    model.eval()
    assert seg_path and all(g is not None and not g.any() for g in seg_path.values())
    assert any(g is not None and g.any() for g in language)  # the text loss itself trains


def test_train_also_adds_whole_modules_to_the_recipe():
    model, _ = build_lisa_tiny(seed=0)
    apply_lora(model, LoraSettings(train_also=("visual_model.image_encoder.", "mm_projector.")))
    trainable = set(trainable_parameter_names(model))
    encoder = {n for n, _ in model.named_parameters() if n.startswith(("visual_model.image_encoder.", "mm_projector."))}
    assert encoder and encoder <= trainable
    assert not any(n.startswith("vision_tower.") for n in trainable)


def test_targets_are_restricted_to_the_language_model():
    model, _ = build_lisa_tiny(seed=0)
    with pytest.raises(RuntimeError):
        apply_lora(model, LoraSettings(target_modules=r".*vision_tower.*\.q_proj"))


def test_merge_restores_plain_names():
    model, _ = build_lisa_tiny(seed=0)
    plain = set(model.state_dict())
    merged = merge_lora(apply_lora(model))
    assert set(merged.state_dict()) == plain


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path_factory):
    from training.build import set_gradient_checkpointing

    torch.manual_seed(0)
    model, tokenizer = build_lisa_tiny(seed=0)
    apply_lora(model, LoraSettings(dropout=0.0))  # no dropout: both passes must match exactly
    dataset = ReasonSegDataset(mini_root(tmp_path_factory) + "/reason_seg/ReasonSeg", "train", explanatory_ratio=None)
    batch = forward_kwargs(collate([dataset[0]], tokenizer, model.config))
    model.train()
    grads = []
    for enabled in (False, True):
        set_gradient_checkpointing(model, enabled)
        model.zero_grad()
        model(**batch, loss_weights=LOSS_WEIGHTS).loss.total.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert model.language_model.model.gradient_checkpointing
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7, msg=name)
