"""Load and save LISA checkpoints in the layout of the released weights (xinlai/LISA-*).

A released checkpoint is a Hugging Face folder:

- `config.json`: a LLaVA config (`architectures` ["LISAForCausalLM"], `model_type`
  "llava") with the LLaMA sizes, the `mm_*` fields of the vision side, `vision_tower`
  (where CLIP comes from) and `out_dim` (the SAM prompt size). SAM's sizes are not
  in it; they are read off the tensor shapes.
- weights as `.bin` or `.safetensors`, one file or shards plus an index, with the
  names of the reference model: `model.*` and `lm_head.*` (LLaMA),
  `model.mm_projector.*`, `model.visual_model.*` (stock SAM names behind the
  prefix) and `model.text_hidden_fcs.0.{0,2}.*`. CLIP is not in them.
- tokenizer files, with LISA's added tokens ([SEG], <im_start>, <im_end>, and in
  LISA-7B-v1 <im_patch>) after the base vocabulary.

`load_lisa` reads that layout (ours too: `save_lisa` writes the same one, so a
model fine-tuned here also loads in the reference tooling).

Precisions: None keeps every tensor as stored (the released 7B files hold the LLM
and projector in bf16, SAM and text_hidden_fcs in fp32; CLIP follows the projector);
"fp32", "bf16" and "fp16" cast the whole model; "int8" and "int4" (CUDA with
bitsandbytes only) quantise the linear layers of the LLaMA decoder layers and keep
everything else, lm_head, projector, text_hidden_fcs and SAM included, in 16-bit:
quantising the [SEG] projection head is a known cause of blank masks.
"""

from __future__ import annotations

import json
import pickle
import re
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer, CLIPVisionModel, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as transformers_logging

from .config import LisaConfig
from .modeling.lisa import LisaModel, build_projector, build_seg_projection
from .modeling.sam import build_sam
from .processing.conversation import get_template
from .tokenizer import seg_token_id

RELEASED_ARCHITECTURE = "LISAForCausalLM"
PRECISIONS = (None, "fp32", "bf16", "fp16", "int8", "int4")
_FLOAT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Released name prefix -> our module prefix. The first match wins: the projector,
# SAM and the [SEG] head also live under `model.`, so they come before its rule.
_KEY_PREFIXES = (
    ("model.mm_projector.", "mm_projector."),
    ("model.visual_model.", "visual_model."),
    ("model.text_hidden_fcs.", "text_hidden_fcs."),
    ("lm_head.", "language_model.lm_head."),
    ("model.", "language_model.model."),
)

SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_SINGLE = "pytorch_model.bin"


def released_to_ours(key: str) -> str | None:
    """Our parameter name for a released state-dict key; None for keys outside the model."""
    for released, ours in _KEY_PREFIXES:
        if key.startswith(released):
            return ours + key[len(released) :]
    return None


def ours_to_released(name: str) -> str | None:
    """The released key of one of our parameter names; None for names outside the
    released layout (CLIP, which is not saved, or wrapped modules such as LoRA's)."""
    for released, ours in _KEY_PREFIXES:
        if name.startswith(ours):
            return released + name[len(ours) :]
    return None


def _is_tolerated(key: str) -> bool:
    # Rotary frequencies are recomputed from the config; older transformers saved them.
    return key.endswith("rotary_emb.inv_freq")


# Reading the released files.


def resolve_checkpoint_dir(path_or_hub_id: str | Path) -> Path:
    """A local checkpoint folder; a hub id ("owner/name") is downloaded first (needs network)."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path} is a file; load_lisa wants the checkpoint folder")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", str(path_or_hub_id)):
        raise FileNotFoundError(f"no checkpoint folder at {path}, and it is not a hub id like 'xinlai/LISA-7B-v1'")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=str(path_or_hub_id)))
    except Exception as error:  # offline, unknown repo, no access: all say the same to the user
        raise FileNotFoundError(
            f"no checkpoint folder at {path}, and downloading it as a hub id failed: {error}"
        ) from error


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        # Checkpoints are untrusted: weights_only unpickles tensors and plain containers only.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds objects other than tensors; refusing to unpickle it (weights_only=True): {error}"
        ) from error
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ValueError(f"{path} is not a flat mapping of names to tensors")
    return state


def read_state_dict(directory: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder, under their stored names and dtypes, on CPU.

    Looks for, in order: `model.safetensors.index.json` (+ shards), `model.safetensors`,
    `pytorch_model.bin.index.json` (+ shards), `pytorch_model.bin`.
    """
    directory = Path(directory)
    for index_name, single_name in ((SAFE_INDEX, SAFE_SINGLE), (BIN_INDEX, BIN_SINGLE)):
        index_path = directory / index_name
        if index_path.is_file():
            weight_map = json.loads(index_path.read_text())["weight_map"]
            state: dict[str, torch.Tensor] = {}
            for filename in sorted(set(weight_map.values())):
                state.update(_load_file(directory / filename))
            absent = sorted(set(weight_map) - set(state))
            if absent:
                raise ValueError(f"{index_name} lists keys that its shards lack: {_listing(absent)}")
            return state
        if (directory / single_name).is_file():
            return _load_file(directory / single_name)
    raise FileNotFoundError(
        f"no weights in {directory}: expected {SAFE_INDEX}, {SAFE_SINGLE}, {BIN_INDEX} or {BIN_SINGLE}"
    )


def _listing(keys: list[str], limit: int = 50) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


def sam_sizes_from_state_dict(state: dict[str, torch.Tensor], prefix: str = "model.visual_model.") -> dict:
    """LisaConfig's `sam_*` fields read off the shapes of a SAM state dict.

    The image encoder's width is the patch embedding's output channels, its depth the
    block count; each block's relative-position table is [2*size - 1, head_dim], where
    size is the embedding grid (S/16) for global blocks and the window otherwise.
    The mask decoder's head count (8) is not recoverable from shapes; build_sam fixes it.
    """

    def get(name: str) -> torch.Tensor:
        if prefix + name not in state:
            raise ValueError(f"the checkpoint has no SAM tensor {prefix + name}")
        return state[prefix + name]

    patch = get("image_encoder.patch_embed.proj.weight")  # [D, 3, 16, 16]
    if tuple(patch.shape[-2:]) != (16, 16):
        raise ValueError(f"SAM's patch embedding has {tuple(patch.shape[-2:])} patches; LISA's SAM uses 16x16")
    embed_dim = patch.shape[0]
    grid = get("image_encoder.pos_embed").shape[1]  # [1, S/16, S/16, D]
    block = re.compile(re.escape(prefix) + r"image_encoder\.blocks\.(\d+)\.")
    depth = 1 + max((int(m.group(1)) for key in state if (m := block.match(key))), default=-1)
    if depth == 0:
        raise ValueError("the checkpoint's SAM image encoder has no blocks")
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
        raise ValueError(f"SAM blocks use several window sizes {sorted(windows)}; SAM uses one")
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


def default_conversation_template(raw_config: dict) -> str:
    """The conversation template a checkpoint was trained with.

    `conversation_template` in config.json when present (save_lisa writes it; the
    released files lack it); else "llava_v1", for the Llama-2 based checkpoints too:
    the reference trains (train_ds.py) and chats (chat.py) with `--conv_type` defaulting
    to "llava_v1", and its README runs xinlai/LISA-13B-llama2-v1 without changing it.
    Pass conversation_template="llava_llama_2" for a model trained with that template.
    """
    return raw_config.get("conversation_template") or "llava_v1"


def load_vision_tower(source: str | Path) -> CLIPVisionModel:
    """CLIP's vision tower from a CLIPVisionModel or full CLIPModel folder or hub id.

    A full CLIPModel's text tower is skipped quietly; a vision weight that is missing
    is an error (transformers would only warn and leave it random).
    """
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # hides the report listing CLIP's text tower
    try:
        clip, info = CLIPVisionModel.from_pretrained(str(source), output_loading_info=True)
    finally:
        transformers_logging.set_verbosity(verbosity)
    if info["missing_keys"] or info.get("mismatched_keys"):
        raise ValueError(
            f"the vision tower at {source} lacks weights {sorted(info['missing_keys'])} "
            f"or has mismatched ones {info.get('mismatched_keys')}"
        )
    return clip


def _llama_config(raw: dict, tokenizer) -> LlamaConfig:
    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    lacking = [name for name in required if name not in raw]
    if lacking:
        raise ValueError(f"config.json lacks {lacking}")
    if raw.get("rope_scaling"):
        raise ValueError(f"rope_scaling {raw['rope_scaling']} is not supported for LISA checkpoints")

    def token_id(name: str) -> int | None:
        value = raw.get(name)
        return value if value is not None else getattr(tokenizer, name)

    return LlamaConfig(
        **{name: raw[name] for name in required},
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


@contextmanager
def _parameters_on_meta():
    """Create parameters on the meta device (no memory, no initialisation); buffers as usual.

    The checkpoint's tensors are assigned afterwards. Buffers that checkpoints do not
    hold (rotary frequencies, SAM's pixel statistics) keep the values their modules
    compute in __init__. Patches nn.Module for the duration: not for use while other
    threads build modules.
    """
    register = nn.Module.register_parameter

    def register_on_meta(module, name, param):
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _cast_floating(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast parameters and saved buffers to `dtype`; computed buffers (rotary
    frequencies, SAM's pixel statistics) stay in fp32, as transformers keeps them."""
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None and param.is_floating_point():
                param.data = param.data.to(dtype)
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.is_floating_point() and name not in module._non_persistent_buffers_set:
                module._buffers[name] = buffer.to(dtype)


def quantizable_linear_names(model: LisaModel) -> list[str]:
    """Names of the linear layers that int8/int4 quantise: those inside the LLaMA
    decoder layers (attention q/k/v/o and MLP gate/up/down projections).

    Everything else stays 16-bit: lm_head, the embeddings, the mm projector, the
    [SEG] projection head (text_hidden_fcs), SAM and CLIP.
    """
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.startswith("language_model.model.layers.")
    ]


def _quantize_language_model(model: LisaModel, bits: int, compute_dtype: torch.dtype) -> None:
    """Swap the quantizable linear layers for bitsandbytes ones holding the same 16-bit
    tensors; bitsandbytes quantises them when the model moves to CUDA."""
    import bitsandbytes as bnb

    for name in quantizable_linear_names(model):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        linear = getattr(parent, child)
        has_bias = linear.bias is not None
        if bits == 8:
            quantized = bnb.nn.Linear8bitLt(
                linear.in_features, linear.out_features, bias=has_bias, has_fp16_weights=False, threshold=6.0
            )
        else:
            quantized = bnb.nn.Linear4bit(
                linear.in_features, linear.out_features, bias=has_bias, compute_dtype=compute_dtype, quant_type="nf4"
            )
        # Setting .data keeps bitsandbytes' parameter classes (Int8Params, Params4bit),
        # whose move to CUDA does the quantisation.
        quantized.weight.data = linear.weight.data
        if has_bias:
            quantized.bias.data = linear.bias.data
        setattr(parent, child, quantized)


def _check_precision(precision: str | None, device: str | torch.device) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision in ("int8", "int4"):
        if torch.device(device).type != "cuda" or not torch.cuda.is_available():
            raise ValueError(
                f"precision {precision!r} needs CUDA and bitsandbytes (pip install 'lisa-ros-model[quantization]'); "
                f"device is {device!r}"
            )
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as error:
            raise ValueError(
                f"precision {precision!r} needs bitsandbytes: pip install 'lisa-ros-model[quantization]'"
            ) from error


def load_lisa(
    path_or_hub_id: str | Path,
    vision_tower: str | Path | None = None,
    precision: str | None = None,
    device: str | torch.device = "cpu",
    conversation_template: str | None = None,
) -> tuple[LisaModel, object]:
    """Load a released (or `save_lisa`d) LISA checkpoint.

    Arguments:
        path_or_hub_id (str | Path): a checkpoint folder, or a hub id such as
            "xinlai/LISA-7B-v1" (downloaded with huggingface_hub; needs network).
        vision_tower (str | Path | None): the CLIP vision tower, a folder or hub id of a
            CLIPVisionModel or a full CLIPModel (e.g. openai/clip-vit-large-patch14).
            None: `vision_tower` (else `mm_vision_tower`) from config.json.
        precision (str | None): None (dtypes as stored), "fp32", "bf16", "fp16", or
            "int8"/"int4" (CUDA + bitsandbytes; see the module docstring).
        device (str | torch.device): where the model goes.
        conversation_template (str | None): "llava_v1" or "llava_llama_2"; None: the one
            config.json records, else "llava_v1" (see `default_conversation_template`).

    Returns:
        (LisaModel, tokenizer): the model in eval mode, and the checkpoint's tokenizer;
        the model's seg_token_id is the tokenizer's single [SEG] id.

    Raises:
        ValueError: when the config, tokenizer or tensors do not make a LISA model; missing
            and unexpected tensors are listed (rotary inv_freq buffers are ignored).
    """
    _check_precision(precision, device)
    directory = resolve_checkpoint_dir(path_or_hub_id)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"no config.json in {directory}")
    raw = json.loads(config_path.read_text())
    if RELEASED_ARCHITECTURE not in (raw.get("architectures") or []):
        raise ValueError(
            f"{config_path} describes {raw.get('architectures')}, not a LISA model ({RELEASED_ARCHITECTURE})"
        )
    if raw.get("mm_vision_select_feature", "patch") != "patch":
        raise ValueError(
            f"mm_vision_select_feature {raw['mm_vision_select_feature']!r} is not supported; LISA uses 'patch'"
        )

    tokenizer = AutoTokenizer.from_pretrained(directory)
    seg_id = seg_token_id(tokenizer)
    llm_config = _llama_config(raw, tokenizer)
    if len(tokenizer) > llm_config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, more than vocab_size {llm_config.vocab_size}")

    state = read_state_dict(directory)
    template = conversation_template or default_conversation_template(raw)
    get_template(template)  # fails early on an unknown name

    clip_source = vision_tower or raw.get("vision_tower") or raw.get("mm_vision_tower")
    if not clip_source:
        raise ValueError("config.json names no vision_tower; pass vision_tower=")
    if not vision_tower and (directory / clip_source).is_dir():
        clip_source = directory / clip_source  # a folder shipped inside the checkpoint (the demo model)
    clip = load_vision_tower(clip_source)
    if raw.get("mm_hidden_size", clip.config.hidden_size) != clip.config.hidden_size:
        raise ValueError(
            f"mm_hidden_size {raw['mm_hidden_size']} does not match the vision tower's width "
            f"{clip.config.hidden_size} ({clip_source})"
        )

    config = LisaConfig(
        llm=llm_config,
        vision=clip.config,
        seg_token_id=seg_id,
        mm_projector_type=raw.get("mm_projector_type") or "linear",
        mm_vision_select_layer=raw.get("mm_vision_select_layer", -2),
        mm_use_im_start_end=raw.get("mm_use_im_start_end", True),
        conversation_template=template,
        **sam_sizes_from_state_dict(state),
    )
    if raw.get("out_dim", config.sam_prompt_embed_dim) != config.sam_prompt_embed_dim:
        raise ValueError(f"out_dim {raw['out_dim']} differs from SAM's prompt size {config.sam_prompt_embed_dim}")

    model = _skeleton(config, clip)
    _assign_released_state(model, state)

    if precision is None:
        model.vision_tower.to(model.dtype)  # CLIP runs in the projector's dtype, as in the reference
    elif precision in _FLOAT_DTYPES:
        _cast_floating(model, _FLOAT_DTYPES[precision])
    elif precision in ("int8", "int4"):
        half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        _cast_floating(model, half)
        _quantize_language_model(model, 8 if precision == "int8" else 4, half)
    return model.to(device).eval(), tokenizer


def _skeleton(config: LisaConfig, vision_tower: nn.Module) -> LisaModel:
    """A LisaModel for `config` around `vision_tower`, its other parameters on the meta device."""
    with _parameters_on_meta():
        return LisaModel(
            config,
            language_model=LlamaForCausalLM(config.llm),
            vision_tower=vision_tower,
            mm_projector=build_projector(config.mm_projector_type, config.vision.hidden_size, config.hidden_size),
            visual_model=build_sam(config),
            text_hidden_fcs=build_seg_projection(config.hidden_size, config.sam_prompt_embed_dim),
        )


def _assign_released_state(model: LisaModel, state: dict[str, torch.Tensor]) -> None:
    """Put the released tensors into the (meta) parameters of `model`, keeping their dtypes."""
    expected = {name: tensor for name, tensor in model.state_dict().items() if not name.startswith("vision_tower.")}
    mapped: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, tensor in state.items():
        if _is_tolerated(key):
            continue
        name = released_to_ours(key)
        if name in expected:
            mapped[name] = tensor
        else:
            unexpected.append(key)
    missing = sorted(ours_to_released(name) for name in expected if name not in mapped)
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"missing {len(missing)}: {_listing(missing)}")
        if unexpected:
            problems.append(f"unexpected {len(unexpected)}: {_listing(sorted(unexpected))}")
        raise ValueError("the checkpoint does not match the LISA model; " + "; ".join(problems))
    mismatched = [
        f"{ours_to_released(name)} {tuple(tensor.shape)} (model {tuple(expected[name].shape)})"
        for name, tensor in mapped.items()
        if tensor.shape != expected[name].shape
    ]
    if mismatched:
        raise ValueError(f"tensor shapes do not match config.json: {_listing(sorted(mismatched))}")
    model.load_state_dict(mapped, strict=False, assign=True)
    left = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left:  # would mean a module holds state that is neither saved nor computed
        raise RuntimeError(f"parameters left without values: {_listing(left)}")


# Writing the released layout.


def released_state_dict(model: LisaModel) -> dict[str, torch.Tensor]:
    """The model's tensors under the released names, CLIP left out, on CPU.

    The names must be those of a plain LISA of the model's config: added modules (LoRA
    adapters, say) would give files that neither the reference nor load_lisa can read.
    """
    expected = set(_skeleton(model.config, nn.Identity()).state_dict())
    names = {name for name in model.state_dict() if not name.startswith("vision_tower.")}
    extra, missing = sorted(names - expected), sorted(expected - names)
    if extra or missing:
        raise ValueError(
            f"the model's parameters differ from a plain LISA's: extra {_listing(extra)}; missing "
            f"{_listing(missing)}; merge adapters into the model first (e.g. peft's merge_and_unload())"
        )
    return {
        ours_to_released(name): tensor.detach().cpu().contiguous()
        for name, tensor in model.state_dict().items()
        if name in expected
    }


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


def save_lisa(
    model: LisaModel,
    tokenizer,
    directory: str | Path,
    max_shard_size: int | str = "5GB",
    safe_serialization: bool = True,
    vision_tower: str | None = None,
) -> Path:
    """Write `model` and `tokenizer` in the released layout (CLIP excluded).

    Arguments:
        model (LisaModel): not quantised; tensors are written in their current dtypes.
        tokenizer: its [SEG] id must be the model's; written in the released layout
            (see `save_released_tokenizer`).
        directory (str | Path): created if needed; weight files of an earlier save there
            are removed so they cannot mix with the new ones.
        max_shard_size (int | str): shard limit ("5GB", "200MB" or bytes); one file
            and no index when everything fits.
        safe_serialization (bool): `.safetensors` (default) or `.bin` (plain tensors,
            loadable with weights_only=True).
        vision_tower (str | None): CLIP's folder or hub id for config.json; None: where
            the model's CLIP was loaded from.

    Returns:
        Path: the checkpoint folder.
    """
    from huggingface_hub import split_torch_state_dict_into_shards

    if any(type(module).__module__.startswith("bitsandbytes") for module in model.modules()):
        raise ValueError("save_lisa cannot write a quantised model; load it in fp32/bf16/fp16 to save it")
    if seg_token_id(tokenizer) != model.config.seg_token_id:
        raise ValueError(
            f"the tokenizer's [SEG] id {seg_token_id(tokenizer)} differs from the model's {model.config.seg_token_id}"
        )
    vision_tower = vision_tower or getattr(model.vision_tower.config, "_name_or_path", "")
    if not vision_tower:
        raise ValueError("the model's CLIP tower has no source path; pass vision_tower= (a folder or hub id)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in [*directory.glob("model*.safetensors"), *directory.glob("pytorch_model*.bin")]:
        stale.unlink()
    for stale in (directory / SAFE_INDEX, directory / BIN_INDEX):
        stale.unlink(missing_ok=True)

    state = released_state_dict(model)
    pattern = "model{suffix}.safetensors" if safe_serialization else "pytorch_model{suffix}.bin"
    split = split_torch_state_dict_into_shards(state, filename_pattern=pattern, max_shard_size=max_shard_size)
    for filename, keys in split.filename_to_tensors.items():
        shard = {key: state[key] for key in keys}
        if safe_serialization:
            from safetensors.torch import save_file

            save_file(shard, str(directory / filename), metadata={"format": "pt"})
        else:
            torch.save(shard, directory / filename)
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        index_name = SAFE_INDEX if safe_serialization else BIN_INDEX
        (directory / index_name).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    config = released_config(model, str(vision_tower))
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_released_tokenizer(tokenizer, directory)
    return directory


_TOKENIZER_FILES = (
    "tokenizer.model",
    "added_tokens.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "tokenizer.json",
)


def save_released_tokenizer(tokenizer, directory: str | Path) -> bool:
    """Write the tokenizer as the released checkpoints hold it, for transformers 4.31's
    slow LlamaTokenizer (the reference tooling) as well as for us.

    That layout is the SentencePiece `tokenizer.model` the tokenizer was loaded from,
    `added_tokens.json` (the ids after the base vocabulary, which must be consecutive),
    `special_tokens_map.json` and a `tokenizer_config.json` naming LlamaTokenizer.
    transformers 5's own save_pretrained writes none of these but tokenizer_config.json,
    naming a class 4.31 lacks. A tokenizer without a SentencePiece file (the built-in
    tiny one) is written by save_pretrained instead; returns False then.
    """
    directory = Path(directory)
    model_file = getattr(tokenizer, "vocab_file", None)
    sentencepiece_model = None
    if model_file and str(model_file).endswith(".model") and Path(model_file).is_file():
        sentencepiece_model = Path(model_file).read_bytes()  # before a save in place removes it
    for name in _TOKENIZER_FILES:  # an earlier save's files would shadow the new ones
        (directory / name).unlink(missing_ok=True)
    if sentencepiece_model is None:
        tokenizer.save_pretrained(directory)
        return False
    import sentencepiece

    base = sentencepiece.SentencePieceProcessor(model_proto=sentencepiece_model).get_piece_size()
    added = {token: index for token, index in tokenizer.get_added_vocab().items() if index >= base}
    if sorted(added.values()) != list(range(base, base + len(added))):
        raise ValueError(f"added token ids {added} do not follow the {base} SentencePiece pieces consecutively")
    (directory / "tokenizer.model").write_bytes(sentencepiece_model)

    def write(name: str, value: dict) -> None:
        (directory / name).write_text(json.dumps(value, indent=2) + "\n")

    def special(token: str) -> dict:
        flags = dict(lstrip=False, normalized=True, rstrip=False, single_word=False)
        return {"__type": "AddedToken", "content": token, **flags}

    write("added_tokens.json", dict(sorted(added.items(), key=lambda item: item[1])))
    names = ("bos_token", "eos_token", "unk_token", "pad_token")
    write("special_tokens_map.json", {name: getattr(tokenizer, name) for name in names if getattr(tokenizer, name)})
    max_length = tokenizer.model_max_length
    write(
        "tokenizer_config.json",
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "bos_token": special(tokenizer.bos_token),
            "eos_token": special(tokenizer.eos_token),
            "unk_token": special(tokenizer.unk_token),
            "pad_token": None,  # special_tokens_map.json sets it (to <unk>)
            "clean_up_tokenization_spaces": False,
            "model_max_length": max_length if max_length < 1e9 else 512,
            "padding_side": tokenizer.padding_side,
            "sp_model_kwargs": {},
            "tokenizer_class": "LlamaTokenizer",
        },
    )
    return True
