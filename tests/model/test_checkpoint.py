"""Released-layout checkpoints: loading, saving, precisions, tokenizers, templates."""

import copy
import json
import re
import sys
import types

import numpy as np
import pytest
import torch
from transformers import CLIPVisionConfig, LlamaConfig

from lisa_model import Conversation, LisaPredictor, build_lisa_tiny
from lisa_model.checkpoint import load_lisa, read_state_dict, save_lisa
from lisa_model.checkpoint.config import default_conversation_template, sam_sizes_from_state_dict
from lisa_model.checkpoint.precision import quantizable_linear_names, quantize_language_model
from lisa_model.config import LisaConfig
from lisa_model.modeling.sam import build_sam
from lisa_model.processing.tokenization import tokenize_prompt
from tests.helpers.released_layout import (
    ADDED_TOKENS_13B_LLAMA2,
    make_released_checkpoint,
    released_config,
    released_key,
    released_tensors,
    round_to_bf16,
    write_bin_shards,
    write_clip,
)

RELEASED_CLIP = "openai/clip-vit-large-patch14"

# Every key of a released checkpoint (facts file, "Checkpoints").
RELEASED_KEY_PATTERNS = [
    r"model\.embed_tokens\.weight",
    r"model\.layers\.\d+\.self_attn\.[qkvo]_proj\.weight",
    r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",
    r"model\.layers\.\d+\.mlp\.(gate|up|down)_proj\.weight",
    r"model\.layers\.\d+\.(input|post_attention)_layernorm\.weight",
    r"model\.norm\.weight",
    r"lm_head\.weight",
    r"model\.mm_projector\.(weight|bias)",
    r"model\.visual_model\.(image_encoder|prompt_encoder|mask_decoder)\..+",
    r"model\.text_hidden_fcs\.0\.[02]\.(weight|bias)",
]

IMAGE = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A tiny LISA-7B-v1-layout checkpoint whose config names the real CLIP hub id, as released."""
    return make_released_checkpoint(
        tmp_path_factory.mktemp("released"), vision_tower=RELEASED_CLIP, mm_vision_tower=RELEASED_CLIP
    )


def by_released_name(model) -> dict[str, torch.Tensor]:
    return {released_key(n): t for n, t in model.state_dict().items() if released_key(n) is not None}


def predict(model, tokenizer, command, image=IMAGE, max_new_tokens=8):
    predictor = LisaPredictor(model, tokenizer, max_new_tokens=max_new_tokens)
    predictor.set_image(image)
    return predictor.predict(command)


def test_fixture_writes_the_released_layout(released):
    directory, _, _, tensors = released
    assert sorted(p.name for p in directory.iterdir()) == [
        "added_tokens.json",
        "config.json",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json",
        "special_tokens_map.json",
        "tokenizer.model",
        "tokenizer_config.json",
    ]
    for key, tensor in tensors.items():
        assert any(re.fullmatch(pattern, key) for pattern in RELEASED_KEY_PATTERNS), key
        fp32 = key.startswith(("model.visual_model.", "model.text_hidden_fcs.")) or key.endswith("inv_freq")
        assert tensor.dtype == (torch.float32 if fp32 else torch.bfloat16), key
    assert not any(key.startswith("model.vision_tower") for key in tensors)


def test_every_tensor_lands_in_its_parameter(released):
    directory, clip_dir, reference, tensors = released
    model, tokenizer = load_lisa(directory, vision_tower=clip_dir)
    loaded = by_released_name(model)
    written = {key: tensor for key, tensor in tensors.items() if not key.endswith("inv_freq")}
    assert set(loaded) == set(written)
    for key, tensor in written.items():
        assert loaded[key].dtype == tensor.dtype, key  # dtypes as stored
        assert torch.equal(loaded[key], tensor), key
    # CLIP comes from its own folder (a full CLIPModel here), in the projector's dtype.
    for name, tensor in reference.vision_tower.state_dict().items():
        assert torch.equal(model.vision_tower.state_dict()[name], tensor.to(torch.bfloat16)), name

    base = len(tokenizer) - 4
    assert tokenizer.convert_tokens_to_ids(["<im_patch>", "<im_start>", "<im_end>", "[SEG]"]) == [
        base,
        base + 1,
        base + 2,
        base + 3,
    ]
    config = model.config
    assert config.seg_token_id == base + 3
    assert config.conversation_template == "llava_v1"
    assert (config.mm_projector_type, config.mm_use_im_start_end, config.mm_vision_select_layer) == ("linear", True, -2)
    assert config.num_image_tokens == 256
    assert config.llm.num_key_value_heads == config.llm.num_attention_heads  # absent in LLaMA-1 configs
    assert (config.llm.eos_token_id, config.llm.pad_token_id, config.llm.rms_norm_eps) == (2, 0, 1e-6)
    sam_fields = [name for name in vars(config) if name.startswith("sam_")]
    assert {n: getattr(config, n) for n in sam_fields} == {n: getattr(reference.config, n) for n in sam_fields}


def test_buffers_are_those_of_the_model_built_in_memory(released):
    """Loading builds the model on the meta device: the buffers that checkpoints do not hold
    (rotary frequencies, SAM's pixel statistics) must come out as a fresh build computes them."""
    directory, clip_dir, reference, _ = released
    model, _ = load_lisa(directory, vision_tower=clip_dir)
    buffers, expected = dict(model.named_buffers()), dict(reference.named_buffers())
    assert set(buffers) == set(expected)
    for name, buffer in expected.items():
        assert buffers[name].device == buffer.device, name
        assert buffers[name].dtype == buffer.dtype, name
        assert torch.equal(buffers[name], buffer), name
    unsaved = {name for name in expected if name not in reference.state_dict()}
    assert {"language_model.model.rotary_emb.inv_freq", "visual_model.pixel_mean", "visual_model.pixel_std"} <= unsaved


def test_mixed_stored_dtypes_run(released):
    """As stored: bf16 LLM beside fp32 SAM and [SEG] head, as the released files are."""
    directory, clip_dir, _, _ = released
    model, tokenizer = load_lisa(directory, vision_tower=clip_dir)
    assert model.visual_model.mask_decoder.iou_token.weight.dtype == torch.float32
    predictor = LisaPredictor(model, tokenizer, max_new_tokens=2)
    predictor.set_image(IMAGE)
    result = predictor.predict("segment the red square")
    assert result.masks.shape[1:] == IMAGE.shape[:2]
    # The [SEG] head and the mask decoder take a bf16 hidden state.
    embeddings = model.project_seg(torch.zeros(2, model.config.hidden_size, dtype=torch.bfloat16))
    assert embeddings.dtype == torch.float32


def test_loaded_model_gives_the_masks_of_the_model_in_memory(trained_tiny, tmp_path):
    model, tokenizer, scenes, _ = trained_tiny
    reference = copy.deepcopy(model)
    round_to_bf16(reference)  # what the released files can hold
    directory = tmp_path / "LISA-7B-v1"
    directory.mkdir()
    write_bin_shards(directory, released_tensors(reference))
    clip_dir = write_clip(tmp_path / "clip", reference.vision_tower)
    (directory / "config.json").write_text(json.dumps(released_config(reference, str(clip_dir))))
    tokenizer.save_pretrained(directory)

    loaded, loaded_tokenizer = load_lisa(directory, vision_tower=clip_dir, precision="fp32")
    image = scenes[0][0]
    for command in ("segment the red square", "segment both squares"):
        expected = predict(reference, tokenizer, command, image, max_new_tokens=12)
        result = predict(loaded, loaded_tokenizer, command, image, max_new_tokens=12)
        assert len(expected.masks) >= 1
        assert result.text == expected.text
        np.testing.assert_array_equal(result.mask_logits, expected.mask_logits)
        np.testing.assert_array_equal(result.scores, expected.scores)


@pytest.mark.parametrize("change", ["missing", "unexpected"])
def test_missing_or_unexpected_keys_are_listed(tmp_path, change):
    directory, clip_dir, _, tensors = make_released_checkpoint(tmp_path)
    tensors = dict(tensors)
    if change == "missing":
        del tensors["model.layers.1.mlp.up_proj.weight"]
        del tensors["model.visual_model.mask_decoder.output_upscaling.0.bias"]
        message = r"missing 2: model.layers.1.mlp.up_proj.weight, model.visual_model.mask_decoder.output_upscaling"
    else:
        tensors["model.mm_projector.extra"] = torch.zeros(1)
        tensors["model.vision_tower.vision_tower.embeddings.class_embedding"] = torch.zeros(1)
        message = r"unexpected 2: model.mm_projector.extra, model.vision_tower.vision_tower"
    for shard in directory.glob("pytorch_model-*.bin"):
        shard.unlink()
    write_bin_shards(directory, tensors)
    with pytest.raises(ValueError, match=message):
        load_lisa(directory, vision_tower=clip_dir)


@pytest.mark.parametrize(
    "sizes",
    [
        # SAM ViT-H, as in every released LISA, and ViT-B.
        dict(sam_encoder_embed_dim=1280, sam_encoder_depth=32, sam_encoder_num_heads=16,
             sam_encoder_global_attn_indexes=(7, 15, 23, 31)),
        dict(sam_encoder_embed_dim=768, sam_encoder_depth=12, sam_encoder_num_heads=12,
             sam_encoder_global_attn_indexes=(2, 5, 8, 11)),
    ],
)
def test_sam_sizes_are_read_off_real_shapes(sizes):
    config = LisaConfig(llm=LlamaConfig(), vision=CLIPVisionConfig(), seg_token_id=0, **sizes)
    with torch.device("meta"):  # real shapes, no memory
        sam = build_sam(config)
    found = sam_sizes_from_state_dict({"model.visual_model." + k: v for k, v in sam.state_dict().items()})
    assert found == {name: getattr(config, name) for name in found}
    assert found["sam_image_size"] == 1024 and found["sam_encoder_window_size"] == 14


def test_shapes_that_contradict_the_config_fail(tmp_path):
    directory, _, reference, _ = make_released_checkpoint(tmp_path)
    config = json.loads((directory / "config.json").read_text())
    config["intermediate_size"] += 8
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"shapes do not match.*mlp"):
        load_lisa(directory)


def test_a_tokenizer_that_splits_seg_fails_clearly(tmp_path):
    directory, _, _, _ = make_released_checkpoint(tmp_path)
    added = json.loads((directory / "added_tokens.json").read_text())
    del added["[SEG]"]
    (directory / "added_tokens.json").write_text(json.dumps(added))
    with pytest.raises(ValueError, match=r"\[SEG\] as .*not as one token id"):
        load_lisa(directory)


@pytest.mark.parametrize("safe", [True, False])
def test_save_then_load_round_trips_bit_exactly(released, tmp_path, safe):
    directory, clip_dir, _, tensors = released
    model, tokenizer = load_lisa(directory, vision_tower=clip_dir)
    saved = save_lisa(model, tokenizer, tmp_path / "saved", max_shard_size="60KB", safe_serialization=safe)

    suffix = ".safetensors" if safe else ".bin"
    index = json.loads((saved / f"{'model.safetensors' if safe else 'pytorch_model.bin'}.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all(name.endswith(suffix) for name in shards)
    # The released names, CLIP excluded.
    assert set(index["weight_map"]) == {key for key in tensors if not key.endswith("inv_freq")}
    config = json.loads((saved / "config.json").read_text())
    assert config["architectures"] == ["LISAForCausalLM"] and config["model_type"] == "llava"
    assert config["torch_dtype"] == "bfloat16"
    # CLIP came from a folder outside: it is saved inside, since load_lisa follows only those.
    assert config["vision_tower"] == "vision_tower" and (saved / "vision_tower" / "config.json").is_file()
    # The tokenizer in the released files' layout, readable by transformers 4.31's slow LlamaTokenizer.
    assert (saved / "tokenizer.model").read_bytes() == (directory / "tokenizer.model").read_bytes()
    assert json.loads((saved / "added_tokens.json").read_text()) == json.loads(
        (directory / "added_tokens.json").read_text()
    )
    assert json.loads((saved / "tokenizer_config.json").read_text())["tokenizer_class"] == "LlamaTokenizer"
    assert not (saved / "tokenizer.json").exists()

    again, again_tokenizer = load_lisa(saved)
    expected = model.state_dict()
    for name, tensor in again.state_dict().items():
        assert tensor.dtype == expected[name].dtype, name
        assert torch.equal(tensor, expected[name]), name
    assert set(again.state_dict()) == set(expected)
    assert again.config.seg_token_id == model.config.seg_token_id
    assert again.config.conversation_template == model.config.conversation_template
    text = "<im_start><image><im_end>\nsegment it [SEG]. USER: ASSISTANT:"
    assert again_tokenizer.encode(text) == tokenizer.encode(text)


def test_saving_over_the_loaded_checkpoint(tmp_path):
    directory, clip_dir, _, _ = make_released_checkpoint(tmp_path)
    model, tokenizer = load_lisa(directory, vision_tower=clip_dir)  # .bin shards, memory-mapped
    expected = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    save_lisa(model, tokenizer, directory, safe_serialization=False, max_shard_size="60KB")
    again, again_tokenizer = load_lisa(directory)
    for name, tensor in again.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert again_tokenizer.get_added_vocab() == tokenizer.get_added_vocab()


def test_save_load_of_a_model_built_in_memory(tmp_path):
    model, tokenizer = build_lisa_tiny(seed=3)  # its tokenizer has no SentencePiece file
    with pytest.raises(ValueError, match="vision_tower="):
        save_lisa(model, tokenizer, tmp_path / "no_clip")
    clip_dir = write_clip(tmp_path / "clip", model.vision_tower, full=False)
    saved = save_lisa(model, tokenizer, tmp_path / "tiny", vision_tower=str(clip_dir))
    assert (saved / "model.safetensors").is_file()  # small enough for one file, no index
    # A second save with .bin must not leave the .safetensors behind to shadow it.
    save_lisa(model, tokenizer, saved, vision_tower=str(clip_dir), safe_serialization=False)
    assert sorted(p.name for p in saved.glob("*.bin")) == ["pytorch_model.bin"]
    assert not list(saved.glob("*.safetensors"))
    assert (saved / "tokenizer.json").is_file() and not (saved / "tokenizer.model").exists()
    loaded, loaded_tokenizer = load_lisa(saved)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    expected = predict(model, tokenizer, "segment the cup")
    result = predict(loaded, loaded_tokenizer, "segment the cup")
    assert result.text == expected.text


def test_adapters_must_be_merged_before_saving(tmp_path):
    model, tokenizer = build_lisa_tiny(seed=0)
    model.language_model.model.layers[0].self_attn.q_proj.lora_A = torch.nn.Linear(4, 4)  # what peft adds
    with pytest.raises(ValueError, match="merge_and_unload"):
        save_lisa(model, tokenizer, tmp_path / "lora", vision_tower="clip")


def test_13b_llama2_token_order_and_template(tmp_path):
    directory, clip_dir, reference, _ = make_released_checkpoint(
        tmp_path,
        name="LISA-13B-llama2-v1",
        added_tokens=ADDED_TOKENS_13B_LLAMA2,
        _name_or_path="./llava-llama-2-13b-chat-lightning-preview",
        num_key_value_heads=4,  # LLaMA-2 configs state it; tiny_config's value
    )
    model, tokenizer = load_lisa(directory, vision_tower=clip_dir)
    base = len(tokenizer) - 3
    assert tokenizer.convert_tokens_to_ids(["[SEG]", "<im_start>", "<im_end>"]) == [base, base + 1, base + 2]
    assert model.config.seg_token_id == base
    # The reference trains and chats with llava_v1 unless told otherwise, this model too.
    assert model.config.conversation_template == "llava_v1"
    for name, tensor in reference.state_dict().items():
        if not name.startswith("vision_tower."):
            assert torch.equal(model.state_dict()[name].float(), tensor), name
    result = predict(model, tokenizer, "segment the red square", max_new_tokens=3)
    assert result.masks.shape[1:] == IMAGE.shape[:2]
    overridden, overridden_tokenizer = load_lisa(directory, clip_dir, conversation_template="llava_llama_2")
    assert overridden.config.conversation_template == "llava_llama_2"
    prompts = []
    overridden.language_model.model.register_forward_hook(
        lambda module, args, kwargs, out: prompts.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True
    )
    predict(overridden, overridden_tokenizer, "segment the red square", max_new_tokens=1)
    prompt = Conversation("llava_llama_2").prompt_for("segment the red square", use_im_start_end=True)
    assert "[INST]" in prompt
    ids = tokenize_prompt(overridden_tokenizer, prompt)
    assert prompts[0] == len(ids) - 1 + overridden.config.num_image_tokens  # the predictor used this prompt
    with pytest.raises(ValueError, match="unknown conversation template"):
        load_lisa(directory, clip_dir, conversation_template="vicuna")


@pytest.mark.parametrize(
    "config, expected",
    [
        ({}, "llava_v1"),
        ({"_name_or_path": "./llava-llama-2-13b-chat-lightning-preview"}, "llava_v1"),
        ({"conversation_template": "llava_llama_2"}, "llava_llama_2"),  # written by save_lisa
    ],
)
def test_default_conversation_template(config, expected):
    assert default_conversation_template(config) == expected


def test_llava15_variant_loads_and_runs(tmp_path):
    directory, clip_dir, reference, _ = make_released_checkpoint(
        tmp_path, name="LISA-llava15", clip_image_size=336, projector="mlp2x_gelu", full_clip=False,
        mm_projector_type="mlp2x_gelu",
    )
    model, tokenizer = load_lisa(directory, vision_tower=clip_dir, precision="fp32")
    assert model.config.vision.image_size == 336 and model.config.num_image_tokens == 576
    assert isinstance(model.mm_projector, torch.nn.Sequential)
    pixels = torch.randn(1, 3, 336, 336)
    assert torch.equal(model.encode_clip(pixels), reference.encode_clip(pixels))
    result = predict(model, tokenizer, "segment the red square", max_new_tokens=3)
    assert result.masks.shape[1:] == IMAGE.shape[:2]


def test_precisions(released):
    directory, clip_dir, _, _ = released
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        model, tokenizer = load_lisa(directory, vision_tower=clip_dir, precision=precision)
        assert {p.dtype for p in model.parameters()} == {dtype}, precision
        # Computed buffers stay fp32: rotary frequencies lose positions in 16-bit.
        assert model.language_model.model.rotary_emb.inv_freq.dtype == torch.float32
    result = predict(model, tokenizer, "segment the cup", max_new_tokens=2)
    assert result.mask_logits.dtype == np.float32
    for precision in ("int8", "int4"):
        with pytest.raises(ValueError, match=r"needs CUDA and bitsandbytes"):
            load_lisa(directory, vision_tower=clip_dir, precision=precision)
    with pytest.raises(ValueError, match="unknown precision"):
        load_lisa(directory, vision_tower=clip_dir, precision="fp8")


def test_quantizable_linear_names_are_the_decoder_layers_only(tiny):
    model, _ = tiny
    layers = model.config.llm.num_hidden_layers
    projections = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
    projections += ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    expected = {f"language_model.model.layers.{i}.{p}" for i in range(layers) for p in projections}
    assert set(quantizable_linear_names(model)) == expected


def test_quantization_swaps_only_those_layers(monkeypatch):
    """With a stand-in for bitsandbytes (no CUDA here): the swap touches nothing else."""

    class FakeLinear(torch.nn.Linear):
        def __init__(self, in_features, out_features, bias=True, **kwargs):
            super().__init__(in_features, out_features, bias=bias)
            self.kwargs = kwargs

    fake = types.SimpleNamespace(nn=types.SimpleNamespace(Linear8bitLt=FakeLinear, Linear4bit=FakeLinear))
    monkeypatch.setitem(sys.modules, "bitsandbytes", fake)
    model, _ = build_lisa_tiny(seed=0)
    names = set(quantizable_linear_names(model))
    weights = {name: model.get_submodule(name).weight for name in names}
    quantize_language_model(model, 4, torch.bfloat16)
    swapped = {name for name, module in model.named_modules() if isinstance(module, FakeLinear)}
    assert swapped == names
    for name in names:  # the same tensors, handed to the quantised layers
        assert model.get_submodule(name).weight.data_ptr() == weights[name].data_ptr()
        assert model.get_submodule(name).kwargs["quant_type"] == "nf4"
    kept = (model.language_model.lm_head, model.mm_projector, *model.text_hidden_fcs[0][::2])
    assert all(type(module) is torch.nn.Linear for module in kept)


class _Payload:
    def __reduce__(self):
        return (_record_call, ("unpickled",))


CALLS = []


def _record_call(value):
    CALLS.append(value)
    return torch.zeros(1)


def test_a_pickle_that_is_not_plain_tensors_is_refused(tmp_path):
    directory, _, _, tensors = make_released_checkpoint(tmp_path)
    index = json.loads((directory / "pytorch_model.bin.index.json").read_text())
    shard = directory / index["weight_map"]["model.norm.weight"]
    state = torch.load(shard, weights_only=True)
    state["model.norm.weight"] = _Payload()
    torch.save(state, shard)
    with pytest.raises(ValueError, match="weights_only"):
        read_state_dict(directory)
    assert CALLS == []


def test_hub_ids_go_through_snapshot_download(released, monkeypatch):
    directory, clip_dir, _, _ = released
    asked = []

    def snapshot_download(repo_id, **kwargs):
        asked.append(repo_id)
        return str(directory)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    model, _ = load_lisa("xinlai/LISA-7B-v1", vision_tower=clip_dir)
    assert asked == ["xinlai/LISA-7B-v1"] and model.config.conversation_template == "llava_v1"
    with pytest.raises(FileNotFoundError, match="no checkpoint folder"):
        load_lisa(directory / "absent" / "deeper")

    def offline(repo_id, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match="downloading it as a hub id failed: no network"):
        load_lisa("models/LISA-7B-v1")  # a mistyped local path reads as a hub id


def test_a_config_that_is_not_lisa_fails(tmp_path):
    directory, clip_dir, _, _ = make_released_checkpoint(tmp_path, architectures=["LlamaForCausalLM"])
    with pytest.raises(ValueError, match="not a LISA model"):
        load_lisa(directory)
