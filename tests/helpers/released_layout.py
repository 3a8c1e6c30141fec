"""Write tiny checkpoints in the exact layout of the released LISA weights.

Written from the facts file, independently of `lisa_model.checkpoint.save_lisa`, so
the loader is checked against the released layout rather than against our saver:

- config.json with the LISA-7B-v1 fields (LLaMA-1 era: no num_key_value_heads, no
  mm_projector_type), `vision_tower` pointing at a CLIP folder;
- a SentencePiece `tokenizer.model` (LLaMA-like: BPE, byte fallback, <unk>/<s>/</s> =
  0/1/2) with `added_tokens.json`, `special_tokens_map.json`, `tokenizer_config.json`
  as transformers 4.31's slow LlamaTokenizer saved them; LISA's added tokens right
  after the base vocabulary in the released order;
- two `.bin` shards and `pytorch_model.bin.index.json`, LLM and projector in bf16,
  SAM and text_hidden_fcs in fp32, rotary `inv_freq` buffers included.
"""

import io
import json
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

from lisa_model.build import build_lisa
from lisa_model.config import tiny_config

ADDED_TOKENS_7B_V1 = ("<im_patch>", "<im_start>", "<im_end>", "[SEG]")
ADDED_TOKENS_13B_LLAMA2 = ("[SEG]", "<im_start>", "<im_end>")

_CORPUS = [
    "A chat between a curious human and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    "You are a helpful language and vision assistant. You are able to understand the visual content",
    "that the user provides, and assist the user with a variety of tasks using natural language.",
    "USER: ASSISTANT: [INST] [/INST] <<SYS>> <</SYS>>",
    "Please segment the red square. Please output segmentation mask. It is. Sure, it is.",
    "What is the cup in this image? The table is gray. 0 1 2 3 4 5 6 7 8 9",
]


def released_key(name: str) -> str | None:
    """The released key of one of our parameter names, spelled out rule by rule."""
    if name.startswith("vision_tower."):
        return None  # CLIP is never in the released files
    if name.startswith("language_model.lm_head."):
        return "lm_head." + name[len("language_model.lm_head.") :]
    if name.startswith("language_model.model."):
        return "model." + name[len("language_model.model.") :]
    for module in ("mm_projector.", "visual_model.", "text_hidden_fcs."):
        if name.startswith(module):
            return "model." + name
    raise AssertionError(f"unmapped parameter {name}")


def write_tokenizer(directory: Path, added_tokens=ADDED_TOKENS_7B_V1) -> int:
    """Write a LLaMA-style SentencePiece tokenizer; returns the base vocabulary size."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS * 10),
        model_writer=model,
        vocab_size=400,
        hard_vocab_limit=False,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        minloglevel=2,
    )
    base = spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.model").write_bytes(model.getvalue())
    _write_json(directory / "added_tokens.json", {token: base + i for i, token in enumerate(added_tokens)})
    _write_json(
        directory / "special_tokens_map.json",
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>", "unk_token": "<unk>"},
    )

    def added(content):
        flags = dict(lstrip=False, normalized=True, rstrip=False, single_word=False)
        return {"__type": "AddedToken", "content": content, **flags}

    _write_json(
        directory / "tokenizer_config.json",
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "bos_token": added("<s>"),
            "eos_token": added("</s>"),
            "unk_token": added("<unk>"),
            "pad_token": None,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 512,
            "padding_side": "right",
            "sp_model_kwargs": {},
            "tokenizer_class": "LlamaTokenizer",
        },
    )
    return base


def released_config(model, clip_path: str, **overrides) -> dict:
    """config.json with the fields of LISA-7B-v1's, sized for `model`; `overrides` replace
    fields (None drops one)."""
    llm = model.config.llm
    config = {
        "_name_or_path": "LLaVA-Lightning-7B-v1-1",
        "architectures": ["LISAForCausalLM"],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "freeze_mm_mlp_adapter": False,
        "hidden_act": "silu",
        "hidden_size": llm.hidden_size,
        "image_aspect_ratio": "square",
        "initializer_range": 0.02,
        "intermediate_size": llm.intermediate_size,
        "max_position_embeddings": 2048,
        "mm_hidden_size": model.config.vision.hidden_size,
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": True,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": clip_path,
        "model_type": "llava",
        "num_attention_heads": llm.num_attention_heads,
        "num_hidden_layers": llm.num_hidden_layers,
        "out_dim": model.config.sam_prompt_embed_dim,
        "pad_token_id": 0,
        "rms_norm_eps": 1e-06,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "train_mask_decoder": True,
        "transformers_version": "4.31.0",
        "tune_mm_mlp_adapter": False,
        "use_cache": False,
        "use_mm_proj": True,
        "vision_tower": clip_path,
        "vocab_size": llm.vocab_size,
    }
    config.update(overrides)
    return {key: value for key, value in config.items() if value is not None}


def released_tensors(model) -> dict[str, torch.Tensor]:
    """The model's tensors under released names and dtypes (LLM + projector bf16, rest fp32),
    with the rotary inv_freq buffers that transformers 4.31 saved."""
    tensors = {}
    for name, tensor in model.state_dict().items():
        key = released_key(name)
        if key is None:
            continue
        bf16 = name.startswith(("language_model.", "mm_projector."))
        tensors[key] = tensor.detach().to(torch.bfloat16 if bf16 else torch.float32).clone()
    head_dim = model.config.llm.hidden_size // model.config.llm.num_attention_heads
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    for layer in range(model.config.llm.num_hidden_layers):
        tensors[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
    return tensors


def write_bin_shards(directory: Path, tensors: dict[str, torch.Tensor], shards: int = 2) -> None:
    """Plain-tensor `.bin` shards, in key order, and `pytorch_model.bin.index.json`."""
    keys = list(tensors)
    size = -(-len(keys) // shards)
    weight_map = {}
    for index in range(shards):
        filename = f"pytorch_model-{index + 1:05d}-of-{shards:05d}.bin"
        part = {key: tensors[key] for key in keys[index * size : (index + 1) * size]}
        torch.save(part, directory / filename)
        weight_map.update(dict.fromkeys(part, filename))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    _write_json(directory / "pytorch_model.bin.index.json", index)


def write_clip(directory: Path, vision_tower, full: bool = True) -> Path:
    """Save `vision_tower` as a full CLIPModel folder (like openai/clip-vit-large-patch14)
    or as a CLIPVisionModel folder."""
    if not full:
        vision_tower.save_pretrained(directory)
        return directory
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99)
    clip = CLIPModel(CLIPConfig(vision_config=vision_tower.config.to_dict(), text_config=text, projection_dim=16))
    clip.vision_model.load_state_dict(vision_tower.state_dict())
    clip.save_pretrained(directory)
    return directory


def round_to_bf16(model) -> None:
    """Round the LLM and projector to bf16 values (kept fp32), as the released files store them."""
    with torch.no_grad():
        for module in (model.language_model, model.mm_projector):
            for param in module.parameters():
                param.copy_(param.to(torch.bfloat16).float())


def make_released_checkpoint(
    root: Path,
    name: str = "LISA-7B-v1",
    added_tokens=ADDED_TOKENS_7B_V1,
    clip_image_size: int = 224,
    projector: str = "linear",
    seed: int = 0,
    full_clip: bool = True,
    **config_overrides,
):
    """A tiny random model written in the released layout under root/name, CLIP under root/clip.

    Returns (checkpoint folder, clip folder, the model in memory with bf16-rounded LLM,
    the written tensors by released name).
    """
    directory = root / name
    base = write_tokenizer(directory, added_tokens)
    config = tiny_config(base + len(added_tokens), base + added_tokens.index("[SEG]"), clip_image_size, projector)
    torch.manual_seed(seed)
    model = build_lisa(config)
    round_to_bf16(model)
    clip_dir = write_clip(root / "clip", model.vision_tower, full=full_clip)
    tensors = released_tensors(model)
    write_bin_shards(directory, tensors)
    _write_json(directory / "config.json", released_config(model, str(clip_dir), **config_overrides))
    return directory, clip_dir, model, tensors


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")
