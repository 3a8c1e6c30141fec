"""Precisions of a loaded model: dtypes as stored, one float dtype, or int8/int4 decoder layers.

None keeps every tensor as stored (the released 7B files hold the LLM and projector in
bf16, SAM and text_hidden_fcs in fp32; CLIP follows the projector); "fp32", "bf16" and
"fp16" cast the whole model; "int8" and "int4" (CUDA with bitsandbytes only) quantise the
linear layers of the LLaMA decoder layers and keep everything else, lm_head, projector,
text_hidden_fcs and SAM included, in 16-bit: quantising the [SEG] projection head is a
known cause of blank masks.
"""

from __future__ import annotations

import torch
from torch import nn

from ..modeling.lisa import LisaModel

PRECISIONS = (None, "fp32", "bf16", "fp16", "int8", "int4")
FLOAT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str | None, device: str | torch.device) -> None:
    """Raise ValueError for an unknown precision, or int8/int4 without CUDA and bitsandbytes."""
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


def apply_precision(model: LisaModel, precision: str | None) -> None:
    """Bring a model loaded with its stored dtypes to `precision` (one of PRECISIONS), in place."""
    if precision is None:
        model.vision_tower.to(model.dtype)  # CLIP runs in the projector's dtype, as in the reference
    elif precision in FLOAT_DTYPES:
        cast_floating(model, FLOAT_DTYPES[precision])
    elif precision in ("int8", "int4"):
        half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        cast_floating(model, half)
        quantize_language_model(model, 8 if precision == "int8" else 4, half)


def cast_floating(model: nn.Module, dtype: torch.dtype) -> None:
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


def quantize_language_model(model: LisaModel, bits: int, compute_dtype: torch.dtype) -> None:
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
