"""config.json of the released layout <-> LisaConfig.

The released config.json is a LLaVA config: the LLaMA sizes, the `mm_*` fields of the
vision side, `vision_tower` and `out_dim` (the SAM prompt size). SAM's sizes are not in
it; they are read off the tensor shapes (`sam_sizes_from_state_dict`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, LlamaConfig

from ..config import LisaConfig
from ..modeling.lisa import LisaModel
from .errors import CheckpointError
from .files import LINK, TensorHeader, inside

FLOAT_DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64")

RELEASED_ARCHITECTURE = "LISAForCausalLM"


def _positive_int(value) -> bool:
    return type(value) is int and value > 0  # bool is an int subclass: excluded


def _positive_number(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and value > 0


def _optional(check):
    return lambda value: value is None or check(value)


# The config.json keys LisaModel reads: what each must be. Checked before anything is
# allocated, so a hostile or broken config fails with the key's name, not deep inside
# torch (or after allocating 100000 layers).
CONFIG_FIELDS = {
    "vocab_size": (_positive_int, "a positive integer"),
    "hidden_size": (_positive_int, "a positive integer"),
    "intermediate_size": (_positive_int, "a positive integer"),
    "num_hidden_layers": (_positive_int, "a positive integer"),
    "num_attention_heads": (_positive_int, "a positive integer"),
    "num_key_value_heads": (_optional(_positive_int), "a positive integer or null"),
    "max_position_embeddings": (_positive_int, "a positive integer"),
    "rms_norm_eps": (_positive_number, "a positive number"),
    "rope_theta": (_positive_number, "a positive number"),
    "initializer_range": (_positive_number, "a positive number"),
    "hidden_act": (lambda value: isinstance(value, str), "a string"),
    "tie_word_embeddings": (lambda value: isinstance(value, bool), "true or false"),
    "bos_token_id": (_optional(lambda value: type(value) is int), "an integer or null"),
    "eos_token_id": (_optional(lambda value: type(value) is int), "an integer or null"),
    "pad_token_id": (_optional(lambda value: type(value) is int), "an integer or null"),
    "rope_scaling": (lambda value: value is None or isinstance(value, dict), "an object or null"),
    "architectures": (lambda value: isinstance(value, list) and all(isinstance(v, str) for v in value),
                      "a list of strings"),
    "mm_hidden_size": (_positive_int, "a positive integer"),
    "mm_projector_type": (_optional(lambda value: isinstance(value, str)), "a string or null"),
    "mm_use_im_start_end": (lambda value: isinstance(value, bool), "true or false"),
    "mm_vision_select_layer": (lambda value: type(value) is int, "an integer"),
    "mm_vision_select_feature": (lambda value: isinstance(value, str), "a string"),
    "vision_tower": (_optional(lambda value: isinstance(value, str)), "a string or null"),
    "mm_vision_tower": (_optional(lambda value: isinstance(value, str)), "a string or null"),
    "out_dim": (_positive_int, "a positive integer"),
    "conversation_template": (_optional(lambda value: isinstance(value, str)), "a string or null"),
}
REQUIRED_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def check_config_fields(raw: dict, config_path: Path) -> None:
    """Raise CheckpointError naming `config_path` and the key for a missing, mistyped or
    out-of-range value of the keys LisaModel reads (CONFIG_FIELDS)."""
    lacking = [name for name in REQUIRED_FIELDS if name not in raw]
    if lacking:
        raise CheckpointError(f"{config_path} lacks {lacking}")
    for name, (check, meaning) in CONFIG_FIELDS.items():
        if name in raw and not check(raw[name]):
            raise CheckpointError(f"{config_path}: {name} must be {meaning}, got {raw[name]!r}")
    heads, kv_heads = raw["num_attention_heads"], raw.get("num_key_value_heads") or raw["num_attention_heads"]
    if raw["hidden_size"] % heads or heads % kv_heads:
        raise CheckpointError(
            f"{config_path}: hidden_size {raw['hidden_size']} must be a multiple of num_attention_heads {heads}, "
            f"and that of num_key_value_heads {kv_heads}"
        )


def read_released_config(directory: Path) -> dict:
    """config.json of a checkpoint folder, checked to describe a LISA model LisaModel can run.

    Raises:
        FileNotFoundError: without config.json.
        CheckpointError: for malformed JSON, a value of the wrong type or range, or a
            model other than LISA.
    """
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"no config.json in {directory}")
    inside(directory, "config.json", LINK)
    try:
        raw = json.loads(config_path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config_path} is not valid JSON: {error}") from error
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_path} holds a JSON {type(raw).__name__}, not an object")
    check_config_fields(raw, config_path)
    if RELEASED_ARCHITECTURE not in (raw.get("architectures") or []):
        raise CheckpointError(
            f"{config_path} describes {raw.get('architectures')}, not a LISA model ({RELEASED_ARCHITECTURE})"
        )
    if raw.get("mm_vision_select_feature", "patch") != "patch":
        raise CheckpointError(
            f"mm_vision_select_feature {raw['mm_vision_select_feature']!r} is not supported; LISA uses 'patch'"
        )
    return raw


def check_config_against_tensors(raw: dict, headers: dict[str, TensorHeader], directory: Path) -> None:
    """Compare config.json's LLaMA sizes with the tensor shapes in the weight files'
    headers, and check every tensor is stored as floats: before anything is allocated.

    Raises:
        CheckpointError: naming the tensor (and its file) or the config key that disagree.
    """
    for key, header in headers.items():
        if header.dtype not in FLOAT_DTYPE_NAMES:
            raise CheckpointError(f"tensor {key} in {header.path} has dtype {header.dtype}; LISA weights are floats")
    layer = re.compile(r"model\.layers\.(\d+)\.")
    layers = 1 + max((int(match.group(1)) for key in headers if (match := layer.match(key))), default=-1)
    config_path = directory / "config.json"
    if layers != raw["num_hidden_layers"]:
        raise CheckpointError(
            f"{config_path}: num_hidden_layers is {raw['num_hidden_layers']} but the weight files hold {layers} layers"
        )
    hidden, intermediate = raw["hidden_size"], raw["intermediate_size"]
    expected = {
        "model.embed_tokens.weight": ((raw["vocab_size"], hidden), "vocab_size, hidden_size"),
        "lm_head.weight": ((raw["vocab_size"], hidden), "vocab_size, hidden_size"),
        "model.layers.0.mlp.gate_proj.weight": ((intermediate, hidden), "intermediate_size, hidden_size"),
    }
    for key, (shape, names) in expected.items():
        if key in headers and headers[key].shape != shape:  # a missing tensor is reported when filling
            raise CheckpointError(
                f"tensor shapes do not match {config_path}: {key} in {headers[key].path} is "
                f"{list(headers[key].shape)}, config.json's ({names}) say {list(shape)}"
            )


def llama_config(raw: dict, tokenizer) -> LlamaConfig:
    """The language model's config from a checked config.json (`read_released_config`);
    token ids absent there come from the tokenizer."""
    if raw.get("rope_scaling"):
        raise CheckpointError(f"rope_scaling {raw['rope_scaling']} is not supported for LISA checkpoints")

    def token_id(name: str) -> int | None:
        value = raw.get(name)
        return value if value is not None else getattr(tokenizer, name)

    config = LlamaConfig(
        **{name: raw[name] for name in REQUIRED_FIELDS},
        num_key_value_heads=raw.get("num_key_value_heads") or raw["num_attention_heads"],
        hidden_act=raw.get("hidden_act", "silu"),
        max_position_embeddings=raw.get("max_position_embeddings", 2048),
        rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
        rope_theta=raw.get("rope_theta", 10000.0),
        initializer_range=raw.get("initializer_range", 0.02),
        tie_word_embeddings=raw.get("tie_word_embeddings", False),
        bos_token_id=token_id("bos_token_id"),
        eos_token_id=token_id("eos_token_id"),
        pad_token_id=token_id("pad_token_id"),
    )
    if len(tokenizer) > config.vocab_size:
        raise CheckpointError(f"the tokenizer has {len(tokenizer)} tokens, more than vocab_size {config.vocab_size}")
    return config


def default_conversation_template(raw_config: dict) -> str:
    """The conversation template a checkpoint was trained with.

    `conversation_template` in config.json when present (save_lisa writes it; the
    released files lack it); else "llava_v1", for the Llama-2 based checkpoints too:
    the reference trains (train_ds.py) and chats (chat.py) with `--conv_type` defaulting
    to "llava_v1", and its README runs xinlai/LISA-13B-llama2-v1 without changing it.
    Pass conversation_template="llava_llama_2" for a model trained with that template.
    """
    return raw_config.get("conversation_template") or "llava_v1"


def sam_sizes_from_state_dict(state: dict[str, torch.Tensor], prefix: str = "model.visual_model.") -> dict:
    """LisaConfig's `sam_*` fields read off the shapes of a SAM state dict.

    The image encoder's width is the patch embedding's output channels, its depth the
    block count; each block's relative-position table is [2*size - 1, head_dim], where
    size is the embedding grid (S/16) for global blocks and the window otherwise.
    The mask decoder's head count (8) is not recoverable from shapes; build_sam fixes it.
    """

    def get(name: str) -> torch.Tensor:
        if prefix + name not in state:
            raise CheckpointError(f"the checkpoint has no SAM tensor {prefix + name}")
        return state[prefix + name]

    patch = get("image_encoder.patch_embed.proj.weight")  # [D, 3, 16, 16]
    if tuple(patch.shape[-2:]) != (16, 16):
        raise CheckpointError(f"SAM's patch embedding has {tuple(patch.shape[-2:])} patches; LISA's SAM uses 16x16")
    embed_dim = patch.shape[0]
    grid = get("image_encoder.pos_embed").shape[1]  # [1, S/16, S/16, D]
    block = re.compile(re.escape(prefix) + r"image_encoder\.blocks\.(\d+)\.")
    depth = 1 + max((int(m.group(1)) for key in state if (m := block.match(key))), default=-1)
    if depth == 0:
        raise CheckpointError("the checkpoint's SAM image encoder has no blocks")
    global_blocks, windows = [], set()
    for index in range(depth):
        table = get(f"image_encoder.blocks.{index}.attn.rel_pos_h")  # [2*size - 1, head_dim]
        head_dim = table.shape[1]
        size = (table.shape[0] + 1) // 2
        if size == grid:
            global_blocks.append(index)
        else:
            windows.add(size)
    if len(windows) > 1:
        raise CheckpointError(f"SAM blocks use several window sizes {sorted(windows)}; SAM uses one")
    return dict(
        sam_image_size=grid * 16,
        sam_encoder_embed_dim=embed_dim,
        sam_encoder_depth=depth,
        sam_encoder_num_heads=embed_dim // head_dim,
        sam_encoder_global_attn_indexes=tuple(global_blocks),
        sam_encoder_window_size=windows.pop() if windows else 0,  # 0: every block attends globally
        sam_prompt_embed_dim=get("mask_decoder.iou_token.weight").shape[1],
        sam_decoder_mlp_dim=get("mask_decoder.transformer.layers.0.mlp.lin1.weight").shape[0],
        sam_iou_head_hidden_dim=get("mask_decoder.iou_prediction_head.layers.0.weight").shape[0],
    )


def lisa_config(
    raw: dict,
    llm: LlamaConfig,
    vision: CLIPVisionConfig,
    seg_token_id: int,
    conversation_template: str,
    state: dict[str, torch.Tensor],
) -> LisaConfig:
    """The LisaConfig of a released checkpoint: config.json's fields, SAM's sizes from `state`."""
    config = LisaConfig(
        llm=llm,
        vision=vision,
        seg_token_id=seg_token_id,
        mm_projector_type=raw.get("mm_projector_type") or "linear",
        mm_vision_select_layer=raw.get("mm_vision_select_layer", -2),
        mm_use_im_start_end=raw.get("mm_use_im_start_end", True),
        conversation_template=conversation_template,
        **sam_sizes_from_state_dict(state),
    )
    if raw.get("out_dim", config.sam_prompt_embed_dim) != config.sam_prompt_embed_dim:
        raise CheckpointError(f"out_dim {raw['out_dim']} differs from SAM's prompt size {config.sam_prompt_embed_dim}")
    return config


def released_config(model: LisaModel, vision_tower: str) -> dict:
    """config.json of the released layout for `model` (plus `conversation_template`)."""
    config = model.config
    llm = config.llm
    dtype = next(model.language_model.parameters()).dtype
    return {
        "architectures": [RELEASED_ARCHITECTURE],
        "model_type": "llava",
        "vocab_size": llm.vocab_size,
        "hidden_size": llm.hidden_size,
        "intermediate_size": llm.intermediate_size,
        "num_hidden_layers": llm.num_hidden_layers,
        "num_attention_heads": llm.num_attention_heads,
        "num_key_value_heads": llm.num_key_value_heads,
        "hidden_act": llm.hidden_act,
        "max_position_embeddings": llm.max_position_embeddings,
        "rms_norm_eps": llm.rms_norm_eps,
        "rope_theta": llm.rope_parameters["rope_theta"],
        "initializer_range": llm.initializer_range,
        "bos_token_id": llm.bos_token_id,
        "eos_token_id": llm.eos_token_id,
        "pad_token_id": llm.pad_token_id,
        "tie_word_embeddings": False,
        "use_cache": False,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "mm_hidden_size": config.vision.hidden_size,
        "mm_projector_type": config.mm_projector_type,
        "mm_use_im_start_end": config.mm_use_im_start_end,
        "mm_use_im_patch_token": False,
        "mm_vision_select_layer": config.mm_vision_select_layer,
        "mm_vision_select_feature": "patch",
        "mm_vision_tower": vision_tower,
        "vision_tower": vision_tower,
        "use_mm_proj": True,
        "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": False,
        "image_aspect_ratio": "square",
        "out_dim": config.sam_prompt_embed_dim,
        "train_mask_decoder": True,
        "conversation_template": config.conversation_template,
    }
