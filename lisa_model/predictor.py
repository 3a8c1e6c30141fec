"""`LisaPredictor`: encode an image once, then answer commands about it."""

from dataclasses import dataclass, field

import numpy as np
import torch

from .modeling.lisa import LisaModel
from .modeling.sam import decode_masks
from .processing.conversation import Conversation
from .processing.image import postprocess_masks, preprocess_clip, preprocess_sam, validate_rgb_image
from .processing.tokenization import IMAGE_TOKEN_INDEX, decode_answer, tokenize_prompt
from .timing import timed


class ContextOverflowError(ValueError):
    """The prompt (earlier turns, image tokens and the new command) does not fit the
    model's context. Starting a new conversation may make the command fit."""


@dataclass
class Prediction:
    """The answer to one command.

    text (str): the model's answer, with its [SEG] tokens.
    masks (ndarray bool [N,H,W]): one mask per [SEG], in answer order, at the image size.
    mask_logits (ndarray float32 [N,H,W]): the masks' logits (mask = logits > 0).
    scores (ndarray float32 [N]): SAM's predicted IoU of each mask, a confidence.
    timings (dict[str, float]): seconds spent in each stage of this call.
    seg_embeddings (Tensor [N,C]): the projected [SEG] embeddings, SAM prompts that do not
        depend on the image: `decode` turns them into masks on any other image (tracking).
    truncated (bool): the answer was cut because the model's context is full (not by
        max_new_tokens, and not at the end of the answer).
    """

    text: str
    masks: np.ndarray
    mask_logits: np.ndarray
    scores: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    seg_embeddings: torch.Tensor | None = None
    truncated: bool = False


@dataclass
class ImageEmbedding:
    """SAM's embedding of one image, with the sizes needed to bring masks back to it.

    embedding (Tensor [1,C,h,w]): the SAM image encoder's output.
    resized_size ((int, int)): the image's size inside SAM's padded square input.
    original_size ((int, int)): the image's own height and width.
    """

    embedding: torch.Tensor
    resized_size: tuple[int, int]
    original_size: tuple[int, int]


class LisaPredictor:
    """Answers commands about one image with a LISA model.

    `set_image` runs CLIP and the SAM image encoder once; every `predict` on that
    image reuses them. The language model's KV cache of the previous prompt is kept
    too, so a command that shares a prefix with it (a new conversation shares the
    system prompt and image tokens, a follow-up shares all earlier turns) only
    computes the new tokens.
    """

    def __init__(self, model: LisaModel, tokenizer, max_new_tokens: int = 128):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.image_timings: dict[str, float] = {}
        self.reset_image()

    @property
    def is_image_set(self) -> bool:
        return self._image_tokens is not None

    def reset_image(self) -> None:
        self._image_tokens = None
        self._image_embedding: ImageEmbedding | None = None
        self._cached_ids: list[int] = []
        self._cache = None

    @torch.no_grad()
    def embed_image(self, image: np.ndarray) -> ImageEmbedding:
        """SAM's embedding of `image` (no CLIP, no language model): what `decode` needs.

        Does not change the image set for `predict`.
        """
        validate_rgb_image(image)
        sam_pixels, resized_size = preprocess_sam(image, self.model.config.sam_image_size)
        embedding = self.model.encode_sam(sam_pixels[None].to(self.model.device))
        return ImageEmbedding(embedding, resized_size, image.shape[:2])

    @torch.no_grad()
    def decode(
        self, seg_embeddings: torch.Tensor, image: ImageEmbedding, timings: dict[str, float] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks of projected [SEG] embeddings on an embedded image: the mask decoder only.

        Arguments:
            seg_embeddings (Tensor [N,C]): Prediction.seg_embeddings, from any image.
            image (ImageEmbedding): from `embed_image` (or the image set for `predict`).
            timings (dict | None): gets the seconds of "mask_decoder" and "postprocess".

        Returns:
            masks (bool [N,H,W]), mask_logits (float32 [N,H,W]), scores (float32 [N]), at the image size.
        """
        timings = {} if timings is None else timings
        device = self.model.device
        with timed(timings, "mask_decoder", device):
            low_res, iou = decode_masks(self.model.visual_model, image.embedding, seg_embeddings)
        with timed(timings, "postprocess", device):
            size = self.model.config.sam_image_size
            logits = postprocess_masks(low_res, image.resized_size, image.original_size, size).float().cpu().numpy()
        return logits > 0, logits, iou[:, 0].float().cpu().numpy()

    @torch.no_grad()
    def set_image(self, image: np.ndarray) -> None:
        """Encode an image for the following `predict` calls.

        Arguments:
            image (ndarray uint8 [H,W,3]): an RGB image.
        """
        validate_rgb_image(image)
        self.reset_image()
        config = self.model.config
        device = self.model.device
        timings: dict[str, float] = {}
        with timed(timings, "clip", device):
            clip_pixels = preprocess_clip(image, config.vision.image_size)[None].to(device)
            self._image_tokens = self.model.encode_clip(clip_pixels)
        with timed(timings, "sam_encoder", device):
            embedded = self.embed_image(image)
        self._image_embedding = embedded
        self.image_timings = timings

    @property
    def image_embedding(self) -> ImageEmbedding | None:
        """SAM's embedding of the image set for `predict` (None before `set_image`)."""
        return self._image_embedding

    @torch.no_grad()
    def predict(self, command: str, conversation: Conversation | None = None) -> Prediction:
        """Answer `command` about the current image.

        Arguments:
            command (str): what to segment or ask, in plain words.
            conversation (Conversation | None): earlier turns to answer in the context of;
                the new turn is appended to it. None starts a fresh conversation.

        Returns:
            Prediction: text, masks, mask logits, scores and timings.

        Raises:
            ContextOverflowError: when the prompt leaves no room in the model's context.
        """
        if not self.is_image_set:
            raise RuntimeError("call set_image() before predict()")
        if not isinstance(command, str) or not command.strip():
            raise ValueError(f"command must be a non-empty string, got {command!r}")
        config = self.model.config
        conversation = conversation if conversation is not None else Conversation(config.conversation_template)
        timings: dict[str, float] = {}

        with timed(timings, "tokenize", self.model.device):
            prompt = conversation.prompt_for(command.strip(), config.mm_use_im_start_end)
            ids = torch.tensor([tokenize_prompt(self.tokenizer, prompt)], device=self.model.device)
            ids = self.model.expand_image_placeholder(ids, ids, IMAGE_TOKEN_INDEX)
            if ids.shape[1] >= config.llm.max_position_embeddings:
                raise ContextOverflowError(
                    f"the prompt has {ids.shape[1]} tokens (with {config.num_image_tokens} image tokens); "
                    f"the model's context is {config.llm.max_position_embeddings}"
                )
            reused = self._reuse_cache(ids[0].tolist())
            embeds = self.model.embed_inputs(ids, self._image_tokens)[:, reused:]
        try:
            generation = self.model.generate(embeds, self.max_new_tokens, cache=self._cache)
        except BaseException:
            # The cache may hold a half-extended prompt now; start the next prompt afresh.
            self._cache, self._cached_ids = None, []
            raise
        timings.update(generation.timings)
        self._cached_ids = ids[0].tolist() + generation.token_ids[:-1]
        self._cache = generation.cache

        token_ids = [t for t in generation.token_ids if t != config.llm.eos_token_id]
        text = decode_answer(self.tokenizer, token_ids)
        conversation.append(command.strip(), text, config.mm_use_im_start_end)

        embeddings = self.model.project_seg(generation.seg_hidden_states)  # two linear layers: untimed
        masks, logits, scores = self.decode(embeddings, self._image_embedding, timings)
        truncated = generation.limited_by_context and generation.token_ids[-1:] != [config.llm.eos_token_id]
        return Prediction(
            text=text,
            masks=masks,
            mask_logits=logits,
            scores=scores,
            seg_embeddings=embeddings,
            timings=timings,
            truncated=truncated,
        )

    def _reuse_cache(self, ids: list[int]) -> int:
        """Crop the kept KV cache to the prefix it shares with `ids`; return its length.

        At least the last prompt token is always recomputed: its hidden state predicts
        the first answer token.
        """
        if self._cache is None:
            return 0
        shared = 0
        for cached, new in zip(self._cached_ids, ids[:-1]):
            if cached != new:
                break
            shared += 1
        surplus = self._cache.get_seq_length() - shared
        if shared == 0:
            self._cache = None
        elif surplus > 0:
            self._cache.crop(-surplus)
        return shared
