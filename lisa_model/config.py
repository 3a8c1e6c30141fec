"""One dataclass describing a LISA model, and the configurations of the built-in sizes."""

from dataclasses import dataclass

from transformers import CLIPVisionConfig, LlamaConfig


@dataclass
class LisaConfig:
    """Everything needed to build a LISA model.

    llm (LlamaConfig): the language model; its vocab_size includes the added tokens.
    vision (CLIPVisionConfig): the CLIP vision tower; image_size and patch_size give
        the number of image tokens ((image_size / patch_size) ** 2, the CLS token dropped).
    mm_projector_type (str): "linear" (LLaVA v1, LISA-7B-v1) or "mlp2x_gelu" (LLaVA-1.5).
    mm_vision_select_layer (int): index into CLIP's hidden_states used as image features.
    mm_use_im_start_end (bool): wrap the image features in <im_start> ... <im_end>.
    conversation_template (str): "llava_v1" or "llava_llama_2".
    seg_token_id (int): id of [SEG] in the tokenizer.
    sam_*: the SAM image encoder (ViT) and mask decoder; sam_prompt_embed_dim is
        also the output size of the [SEG] projection head (256 in SAM).
    """

    llm: LlamaConfig
    vision: CLIPVisionConfig
    seg_token_id: int
    mm_projector_type: str = "linear"
    mm_vision_select_layer: int = -2
    mm_use_im_start_end: bool = True
    conversation_template: str = "llava_v1"
    sam_image_size: int = 1024
    sam_encoder_embed_dim: int = 1280
    sam_encoder_depth: int = 32
    sam_encoder_num_heads: int = 16
    sam_encoder_global_attn_indexes: tuple[int, ...] = (7, 15, 23, 31)
    sam_encoder_window_size: int = 14
    sam_prompt_embed_dim: int = 256
    sam_decoder_mlp_dim: int = 2048
    sam_iou_head_hidden_dim: int = 256

    @property
    def hidden_size(self) -> int:
        return self.llm.hidden_size

    @property
    def num_image_tokens(self) -> int:
        return (self.vision.image_size // self.vision.patch_size) ** 2

    @property
    def sam_embedding_size(self) -> int:
        return self.sam_image_size // 16  # SAM's ViT uses 16-pixel patches


def _llama(vocab_size: int, hidden: int, intermediate: int, layers: int, heads: int, context: int) -> LlamaConfig:
    """A LLaMA config with the token ids and norm epsilon every LISA release uses."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=context,
        rms_norm_eps=1e-6,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def _clip(hidden: int, intermediate: int, layers: int, heads: int, image_size: int) -> CLIPVisionConfig:
    """A CLIP vision config with ViT-L/14's 14-pixel patches."""
    return CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=14,
    )


def tiny_config(
    vocab_size: int, seg_token_id: int, clip_image_size: int = 224, projector: str = "linear"
) -> LisaConfig:
    """A few-MB LISA with the real structure: 2-layer LLaMA (hidden 64), 2-layer CLIP
    with the real patch grid (224 px -> 256 tokens, 336 px -> 576), tiny SAM at 128 px."""
    return _small_config(_llama(vocab_size, hidden=64, intermediate=128, layers=2, heads=4, context=2048),
                         seg_token_id, clip_image_size, projector, sam_image_size=128)


def demo_config(vocab_size: int, seg_token_id: int) -> LisaConfig:
    """The demo model's shape (trained on CPU on the synthetic demo scenes): a 4-layer
    LLaMA of hidden size 128, the tiny CLIP at 112 px (64 image tokens keep the training
    step short) and SAM at 256 px with 64-wide embeddings (64x64 low-resolution masks
    from 16 upscaled channels: small objects of a 320x240 image keep their outline)."""
    return _small_config(_llama(vocab_size, hidden=128, intermediate=256, layers=4, heads=4, context=2048),
                         seg_token_id, 112, "linear", sam_image_size=256, sam_width=64)


def _small_config(llm: LlamaConfig, seg_token_id: int, clip_image_size: int, projector: str,
                  sam_image_size: int, sam_width: int = 32) -> LisaConfig:
    """`llm` with a 2-layer CLIP (hidden 32) and a 2-layer SAM ViT whose embeddings, prompt and
    mask-decoder widths are `sam_width`."""
    return LisaConfig(
        llm=llm,
        vision=_clip(hidden=32, intermediate=64, layers=2, heads=2, image_size=clip_image_size),
        seg_token_id=seg_token_id,
        mm_projector_type=projector,
        sam_image_size=sam_image_size,
        sam_encoder_embed_dim=sam_width,
        sam_encoder_depth=2,
        sam_encoder_num_heads=2,
        sam_encoder_global_attn_indexes=(1,),
        sam_encoder_window_size=4,
        sam_prompt_embed_dim=sam_width,
        sam_decoder_mlp_dim=2 * sam_width,
        sam_iou_head_hidden_dim=sam_width,
    )


def _real_size_config(llm: LlamaConfig, seg_token_id: int, conversation_template: str) -> LisaConfig:
    """LISA at a released size: `llm`, CLIP ViT-L/14 at 224 px, linear projector, SAM ViT-H."""
    return LisaConfig(
        llm=llm,
        vision=_clip(hidden=1024, intermediate=4096, layers=24, heads=16, image_size=224),
        seg_token_id=seg_token_id,
        mm_projector_type="linear",
        conversation_template=conversation_template,
        # SAM fields keep LisaConfig's defaults, which are SAM ViT-H.
    )


def config_7b(vocab_size: int = 32004, seg_token_id: int = 32003) -> LisaConfig:
    """LISA-7B-v1's shapes: LLaMA-7B (LLaVA-Lightning-7B-v1-1), CLIP ViT-L/14 at 224 px,
    linear projector, SAM ViT-H, llava_v1 template. Defaults are the released token ids."""
    return _real_size_config(_llama(vocab_size, 4096, 11008, 32, 32, 2048), seg_token_id, "llava_v1")


def config_13b(vocab_size: int = 32003, seg_token_id: int = 32000) -> LisaConfig:
    """LISA-13B-llama2-v1's shapes: LLaMA-2-13B (4096-token context), CLIP ViT-L/14 at 224 px,
    linear projector, SAM ViT-H, llava_llama_2 template. Defaults are the released token ids."""
    return _real_size_config(_llama(vocab_size, 5120, 13824, 40, 40, 4096), seg_token_id, "llava_llama_2")
