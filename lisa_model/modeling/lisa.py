"""The LISA model: a LLaVA-style multimodal LLaMA whose [SEG] tokens prompt SAM."""

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import LisaConfig
from ..decoding import FullSequenceDecoder, TokenDecoder
from ..losses import LisaLoss, LossWeights, combine_losses, mask_losses
from ..processing.image import postprocess_masks
from ..processing.tokenization import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from ..timing import timed
from .sam import decode_masks


def build_projector(projector_type: str, vision_hidden_size: int, hidden_size: int) -> nn.Module:
    """The mm projector from CLIP features to LLM embeddings."""
    if projector_type == "linear":
        return nn.Linear(vision_hidden_size, hidden_size)
    if projector_type == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(vision_hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))
    raise ValueError(f"unknown mm projector type {projector_type!r}; use 'linear' or 'mlp2x_gelu'")


def build_seg_projection(hidden_size: int, out_dim: int) -> nn.ModuleList:
    """`text_hidden_fcs`: [SEG] hidden state -> SAM prompt embedding.

    A ModuleList of one Sequential so parameter names match the released checkpoints
    (`text_hidden_fcs.0.0.*`, `text_hidden_fcs.0.2.*`).
    """
    head = nn.Sequential(
        nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, out_dim), nn.Dropout(0.0)
    )
    return nn.ModuleList([head])


@dataclass
class GenerationOutput:
    token_ids: list[int]  # generated ids, ending with EOS unless cut by max_new_tokens or the context
    seg_hidden_states: torch.Tensor  # [N_seg, H], final-layer states that predicted each [SEG]
    cache: object | None  # the KV cache holding the prompt and all generated tokens but the last
    timings: dict[str, float]  # seconds: "prefill" (the prompt, its first token) and "decode" (the others)
    limited_by_context: bool = False  # max_new_tokens was lowered to the room left in the context
    stopped: bool = False  # the on_token callback ended the answer


@dataclass
class LisaOutput:
    loss: LisaLoss | None
    seg_embeddings: list[torch.Tensor]  # per conversation [n_i, out_dim]
    mask_logits: list[torch.Tensor]  # per conversation [n_i, H, W] at the original image size
    iou_predictions: list[torch.Tensor]  # per conversation [n_i]


class LisaModel(nn.Module):
    """CLIP vision tower + mm projector + LLaMA + [SEG] projection head + SAM.

    Parameter names follow the released layout once prefixed: `language_model.model.*`
    and `language_model.lm_head.*` <-> `model.*` and `lm_head.*`; `mm_projector`,
    `visual_model` (SAM) and `text_hidden_fcs` <-> `model.<same name>.*`.
    """

    def __init__(
        self,
        config: LisaConfig,
        language_model: nn.Module,
        vision_tower: nn.Module,
        mm_projector: nn.Module,
        visual_model: nn.Module,
        text_hidden_fcs: nn.ModuleList,
    ):
        super().__init__()
        self.config = config
        self.language_model = language_model
        self.vision_tower = vision_tower
        self.mm_projector = mm_projector
        self.visual_model = visual_model
        self.text_hidden_fcs = text_hidden_fcs

    @property
    def device(self) -> torch.device:
        return self.mm_projector_weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mm_projector_weight.dtype

    @property
    def mm_projector_weight(self) -> torch.Tensor:
        return next(self.mm_projector.parameters())

    # Image encoders. Frozen in LISA: with frozen weights autograd records nothing here, and
    # a model trained from random weights (the demo model) can train them.

    def clip_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP pixels [B,3,s,s] -> patch features [B, num_image_tokens, C] (CLS dropped)."""
        out = self.vision_tower(pixels.to(self.dtype), output_hidden_states=True)
        return out.hidden_states[self.config.mm_vision_select_layer][:, 1:]

    def encode_clip(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP pixels [B,3,s,s] -> image tokens in the LLM's embedding space [B, num_image_tokens, H]."""
        return self.mm_projector(self.clip_features(pixels))

    def encode_sam(self, pixels: torch.Tensor) -> torch.Tensor:
        """SAM pixels [B,3,S,S] (normalised, padded) -> image embeddings [B,C,S/16,S/16]."""
        # SAM's own dtype: released checkpoints keep SAM in fp32 beside a bf16 LLM.
        encoder = self.visual_model.image_encoder
        return encoder(pixels.to(encoder.patch_embed.proj.weight.dtype))

    # Text side.

    def expand_image_placeholder(self, values: torch.Tensor, input_ids: torch.Tensor, fill: int) -> torch.Tensor:
        """Replace each row's single <image> placeholder position in `values` [B,L]
        by num_image_tokens copies of `fill` -> [B, L + num_image_tokens - 1]."""
        rows = []
        for row, ids in zip(values, input_ids):
            where = (ids == IMAGE_TOKEN_INDEX).nonzero()
            if len(where) != 1:
                raise ValueError(f"each sequence needs exactly one <image> placeholder, found {len(where)}")
            at = int(where)
            rows.append(torch.cat([row[:at], row.new_full((self.config.num_image_tokens,), fill), row[at + 1 :]]))
        return torch.stack(rows)

    def embed_inputs(self, expanded_ids: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings [B,T,H] with the image slots (IMAGE_TOKEN_INDEX) filled by `image_tokens`."""
        embeds = self.language_model.get_input_embeddings()(expanded_ids.clamp(min=0))
        slots = (expanded_ids == IMAGE_TOKEN_INDEX).unsqueeze(-1)
        return embeds.masked_scatter(slots, image_tokens.to(embeds.dtype))

    def project_seg(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[N,H] final-layer hidden states -> [N, out_dim] SAM prompt embeddings."""
        head = self.text_hidden_fcs[0]
        return head(hidden_states.to(head[0].weight.dtype))  # fp32 in the released checkpoints

    @torch.no_grad()
    def generate(
        self,
        prompt_embeds: torch.Tensor,
        max_new_tokens: int,
        cache=None,
        use_cache: bool = True,
        decoder: TokenDecoder | FullSequenceDecoder | None = None,
        on_token: Callable[[int, torch.Tensor], bool] | None = None,
    ) -> GenerationOutput:
        """Greedy decoding from `prompt_embeds` [1,T,H], stopping at EOS.

        Arguments:
            prompt_embeds (Tensor [1,T,H]): the prompt's input embeddings (after `cache`'s prefix).
            max_new_tokens (int): most tokens to generate (lowered to the room left in the context).
            cache: a KV cache holding an earlier prefix of the prompt, extended in place;
                None: an empty one from the decoder.
            use_cache (bool): False re-runs the whole sequence for every new token, as the
                reference does (kept for comparisons); ignored when `decoder` is given.
            decoder (TokenDecoder | FullSequenceDecoder | None): the prefill and step
                functions (lisa_model.decoding); None: an eager one.
            on_token (callable(token_id, hidden [H]) -> bool | None): called with each new
                token the moment it is chosen, and the final-layer hidden state that chose it
                (a [SEG]'s mask prompt before projection); returning True stops generation
                after that token. Its time is not counted in "decode".

        The hidden state that predicts each [SEG] is kept as it is produced, so the
        [SEG] embeddings need no second pass.
        """
        if decoder is None:
            decoder = TokenDecoder(self.language_model) if use_cache else FullSequenceDecoder(self.language_model)
        if cache is None:
            cache = decoder.empty_cache()
        past = int(cache.get_seq_length()) if cache is not None else 0
        room = self.config.llm.max_position_embeddings - past - prompt_embeds.shape[1]
        limited_by_context = room < max_new_tokens
        max_new_tokens = min(max_new_tokens, room)
        device = prompt_embeds.device
        timings: dict[str, float] = {}
        with timed(timings, "prefill", device):
            hidden, token = decoder.prefill(prompt_embeds, cache)
        tokens: list[int] = []
        seg_hidden = []
        stopped = False
        callback_seconds = 0.0
        with timed(timings, "decode", device):
            for step in range(max_new_tokens):
                tokens.append(token)
                if token == self.config.seg_token_id:
                    seg_hidden.append(hidden[0])
                if on_token is not None:
                    start = time.perf_counter()
                    stopped = bool(on_token(token, hidden[0]))
                    callback_seconds += time.perf_counter() - start
                if stopped or token == self.config.llm.eos_token_id or step == max_new_tokens - 1:
                    break
                hidden, token = decoder.step(token, cache)
        timings["decode"] -= callback_seconds
        hidden_size = self.config.hidden_size
        states = torch.stack(seg_hidden) if seg_hidden else prompt_embeds.new_zeros((0, hidden_size))
        return GenerationOutput(
            token_ids=tokens,
            seg_hidden_states=states,
            cache=cache,
            timings=timings,
            limited_by_context=limited_by_context,
            stopped=stopped,
        )

    # Training / teacher-forced forward.

    def forward(
        self,
        sam_pixels: torch.Tensor,
        clip_pixels: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_index: torch.Tensor,
        resized_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
        labels: torch.Tensor | None = None,
        gt_masks: list[torch.Tensor] | None = None,
        loss_weights: LossWeights = LossWeights(),
    ) -> LisaOutput:
        """Teacher-forced pass over a batch of conversations about a batch of images.

        Arguments:
            sam_pixels (Tensor[I,3,S,S]), clip_pixels (Tensor[I,3,s,s]): the I images.
            input_ids (Tensor[B,L]): B conversations, right-padded, one IMAGE_TOKEN_INDEX each.
            attention_mask (Tensor[B,L]): 1 for tokens, 0 for padding.
            image_index (Tensor[B]): which image each conversation is about.
            resized_sizes, original_sizes: per image, (h, w) after SAM's resize / as given.
            labels (Tensor[B,L]): target ids, IGNORE_INDEX where no loss is taken.
            gt_masks: per conversation, [n_i, H, W] targets for its n_i [SEG] tokens.

        Returns:
            LisaOutput with the loss (when labels and gt_masks are given) and, per
            conversation, the [SEG] embeddings, mask logits at the original image size
            and SAM's IoU predictions.
        """
        image_embeddings = self.encode_sam(sam_pixels)
        image_tokens = self.encode_clip(clip_pixels)[image_index]
        expanded_ids = self.expand_image_placeholder(input_ids, input_ids, IMAGE_TOKEN_INDEX)
        attention = self.expand_image_placeholder(attention_mask, input_ids, 1)
        embeds = self.embed_inputs(expanded_ids, image_tokens)
        outputs = self.language_model.model(inputs_embeds=embeds, attention_mask=attention, use_cache=False)
        hidden = outputs.last_hidden_state

        # Position t predicts token t+1: [SEG] embeddings come from the positions before each [SEG].
        predicts_seg = expanded_ids[:, 1:] == self.config.seg_token_id
        seg_embeddings = self.project_seg(hidden[:, :-1][predicts_seg]).split(predicts_seg.sum(1).tolist())

        mask_logits, iou_predictions = [], []
        for conversation, embeddings in enumerate(seg_embeddings):
            image = int(image_index[conversation])
            low_res, iou = decode_masks(self.visual_model, image_embeddings[image : image + 1], embeddings)
            logits = postprocess_masks(low_res, resized_sizes[image], original_sizes[image], self.config.sam_image_size)
            mask_logits.append(logits)
            iou_predictions.append(iou[:, 0])

        loss = None
        if labels is not None and gt_masks is not None:
            targets = self.expand_image_placeholder(labels, input_ids, IGNORE_INDEX)[:, 1:]
            supervised = targets != IGNORE_INDEX
            logits = self.language_model.get_output_embeddings()(hidden[:, :-1][supervised])
            ce = F.cross_entropy(logits.float(), targets[supervised])
            bce, dice = mask_losses(mask_logits, gt_masks)
            loss = combine_losses(ce, bce + self._seg_path_anchor(), dice, loss_weights)
        return LisaOutput(loss, list(seg_embeddings), mask_logits, iou_predictions)

    def _seg_path_anchor(self) -> torch.Tensor | float:
        """0 x (sum of the trainable [SEG]-path weights), added to the mask loss.

        A batch without any [SEG] (text-only answers) never reaches SAM's mask decoder or
        the [SEG] head, so those weights would get no gradient on that rank, and
        distributed engines (DDP, FSDP, ZeRO), which reduce gradients parameter by
        parameter, would then disagree across ranks. With the anchor they always get
        one, an exact zero when nothing else reaches them.
        """
        weights = [p for module in (self.visual_model.mask_decoder, self.text_hidden_fcs)
                   for p in module.parameters() if p.requires_grad]
        return sum(p.float().sum() for p in weights) * 0.0
