"""SAM from the `segment-anything` package, prompted with [SEG] embeddings."""

import importlib
import importlib.util
import sys
from functools import partial

import torch
from torch import nn

from ..config import LisaConfig
from ..processing.image import SAM_PIXEL_MEAN, SAM_PIXEL_STD


def _sam_modeling():
    """`segment_anything.modeling`, without running the package's `__init__`.

    That `__init__` imports the predictor, which needs torchvision; the model
    modules need only torch, and torchvision is not installable beside every torch.
    """
    if "segment_anything.modeling" in sys.modules:
        return sys.modules["segment_anything.modeling"]
    spec = importlib.util.find_spec("segment_anything")
    if spec is None:
        raise ImportError("segment-anything is not installed: pip install segment-anything")
    loaded_parent = sys.modules.get("segment_anything")
    if loaded_parent is None:
        sys.modules["segment_anything"] = importlib.util.module_from_spec(spec)
    try:
        return importlib.import_module("segment_anything.modeling")
    finally:
        if loaded_parent is None:
            # A later `import segment_anything` then runs the real `__init__`.
            del sys.modules["segment_anything"]


def build_sam(config: LisaConfig) -> nn.Module:
    """A stock `segment_anything.modeling.Sam` with the configured sizes (untrained)."""
    sam = _sam_modeling()
    embedding_size = config.sam_embedding_size
    dim = config.sam_prompt_embed_dim
    return sam.Sam(
        image_encoder=sam.ImageEncoderViT(
            depth=config.sam_encoder_depth,
            embed_dim=config.sam_encoder_embed_dim,
            img_size=config.sam_image_size,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=config.sam_encoder_num_heads,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=config.sam_encoder_global_attn_indexes,
            window_size=config.sam_encoder_window_size,
            out_chans=dim,
        ),
        prompt_encoder=sam.PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(config.sam_image_size, config.sam_image_size),
            mask_in_chans=16,
        ),
        mask_decoder=sam.MaskDecoder(
            num_multimask_outputs=3,
            transformer=sam.TwoWayTransformer(
                depth=2,
                embedding_dim=dim,
                mlp_dim=config.sam_decoder_mlp_dim,
                num_heads=8,  # as every SAM; not recoverable from checkpoint shapes
            ),
            transformer_dim=dim,
            iou_head_depth=3,
            iou_head_hidden_dim=config.sam_iou_head_hidden_dim,
        ),
        pixel_mean=list(SAM_PIXEL_MEAN),
        pixel_std=list(SAM_PIXEL_STD),
    )


def sam_pixel_statistics() -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's `pixel_mean` and `pixel_std` buffers (fp32 [3, 1, 1], 0-255 scale), as `Sam.__init__`
    makes them from the statistics that build_sam passes (those preprocess_sam normalises with)."""
    return (
        torch.tensor(SAM_PIXEL_MEAN, dtype=torch.float32).view(-1, 1, 1),
        torch.tensor(SAM_PIXEL_STD, dtype=torch.float32).view(-1, 1, 1),
    )


def decode_masks(
    sam: nn.Module, image_embedding: torch.Tensor, seg_embeddings: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one low-resolution mask per [SEG] embedding, all in one call.

    Arguments:
        image_embedding (Tensor[1, C, h, w]): SAM image embedding of one image.
        seg_embeddings (Tensor[N, C]): projected [SEG] embeddings for that image.

    Returns:
        low_res_logits (Tensor[N, 1, 4h, 4w]) and iou_predictions (Tensor[N, 1]).
    """
    count = seg_embeddings.shape[0]
    if count == 0:  # an answer without [SEG]: nothing to decode
        side = 4 * image_embedding.shape[-1]
        return image_embedding.new_zeros((0, 1, side, side)), image_embedding.new_zeros((0, 1))
    # Each embedding is the only sparse prompt token; no points, boxes or mask input.
    sparse = seg_embeddings[:, None, :].to(image_embedding.dtype)
    no_mask = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
    dense = no_mask.expand(count, -1, *image_embedding.shape[-2:])
    pe_layer = sam.prompt_encoder.pe_layer
    if pe_layer.positional_encoding_gaussian_matrix.dtype != torch.float32:
        # segment-anything multiplies an fp32 grid by this buffer: keep it fp32 in a half model.
        pe_layer.positional_encoding_gaussian_matrix = pe_layer.positional_encoding_gaussian_matrix.float()
    return sam.mask_decoder(
        image_embeddings=image_embedding,
        image_pe=sam.prompt_encoder.get_dense_pe().to(image_embedding.dtype),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
