"""`LisaPredictor`: encode an image once, then answer commands about it."""

import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Hashable

import numpy as np
import torch

from .decoding import TokenDecoder, crop_to
from .image_encoding import ConcurrentSamEncoder, ImageEmbedding, finished
from .modeling.lisa import LisaModel
from .modeling.sam import decode_masks
from .processing.conversation import Conversation
from .processing.image import postprocess_masks, preprocess_clip, preprocess_sam, validate_rgb_image
from .processing.tokenization import IMAGE_TOKEN_INDEX, tokenize_prompt
from .streaming import AnswerStream, EarlyMask
from .timing import timed

__all__ = ["ContextOverflowError", "EarlyMask", "ImageEmbedding", "LisaPredictor", "Prediction"]


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
    timings (dict[str, float]): seconds spent in each stage of this call, and from its start to
        the first mask ("first_mask", only when there is a mask) and to its end ("total").
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


class LisaPredictor:
    """Answers commands about one image with a LISA model.

    `set_image` runs CLIP and the SAM image encoder once; every `predict` on that
    image reuses them. The language model's KV cache of the previous prompt is kept
    too, so a command that shares a prefix with it (a new conversation shares the
    system prompt and image tokens, a follow-up shares all earlier turns) only
    computes the new tokens. Each [SEG] is decoded into its mask the moment it is
    generated (`predict`'s on_mask), while the answer goes on.

    Arguments:
        model (LisaModel), tokenizer: the model and its tokenizer.
        max_new_tokens (int): the longest answer, in tokens.
        decode_mode (str): "eager", "static" or "compiled" (lisa_model.decoding). Measured
            (bench/latency.py, bench/gpu_check.py): on a CPU eager is fastest; "compiled"
            is meant for CUDA, where its step replays as a CUDA graph.
        short_answer (bool): stop generating after the last [SEG] (AnswerStream says
            exactly where); the text is the answer's prefix through that [SEG].
        overlap_sam_encoder (bool | None): `set_image` starts SAM's image encoder on a
            worker thread (on CUDA a second stream) and returns after CLIP; the first
            [SEG] waits for it. None: on CUDA only (on a 2-core CPU the two compete for
            the same cores; see bench/latency.py).
    """

    def __init__(
        self,
        model: LisaModel,
        tokenizer,
        max_new_tokens: int = 128,
        *,
        decode_mode: str = "eager",
        short_answer: bool = False,
        overlap_sam_encoder: bool | None = None,
    ):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.short_answer = short_answer
        self.decoder = TokenDecoder(model.language_model, decode_mode)
        if overlap_sam_encoder is None:
            overlap_sam_encoder = model.device.type == "cuda"
        self._sam_encoder = ConcurrentSamEncoder(self.embed_image, model.device) if overlap_sam_encoder else None
        self.image_timings: dict[str, float] = {}
        self.reset_image()

    @property
    def is_image_set(self) -> bool:
        return self._image_tokens is not None

    @property
    def image_key(self) -> Hashable | None:
        """The key given to `set_image` with the image now set (None without one)."""
        return self._image_key

    def reset_image(self) -> None:
        self._image_tokens = None
        self._image_key = None
        self._image_size: tuple[int, int] = (0, 0)
        self._sam: Future | None = None
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
            timings (dict | None): gets the seconds of "mask_decoder" and "postprocess" added.

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
    def set_image(
        self, image: np.ndarray, key: Hashable | None = None, image_embedding: ImageEmbedding | None = None
    ) -> None:
        """Encode an image for the following `predict` calls (pre-encoding a frame: call it
        before the command comes, and the command starts with the language model at once).

        Arguments:
            image (ndarray uint8 [H,W,3]): an RGB image.
            key (hashable | None): the caller's name for this image (a frame's stamp, say):
                `image_key` returns it, and `predict(image_key=...)` refuses another image.
            image_embedding (ImageEmbedding | None): SAM's embedding of this same image,
                already computed by `embed_image` (a tracker did): SAM's encoder is skipped.

        With overlap_sam_encoder, SAM's encoder may still be running when this returns;
        `image_embedding` and the first mask wait for it, and image_timings["sam_encoder"]
        appears when it is done.
        """
        validate_rgb_image(image)
        if image_embedding is not None and tuple(image_embedding.original_size) != tuple(image.shape[:2]):
            raise ValueError(
                f"image_embedding is of a {image_embedding.original_size} image, not of this {image.shape[:2]} one"
            )
        self.reset_image()
        config = self.model.config
        device = self.model.device
        timings: dict[str, float] = {}
        self.image_timings = timings
        sam = None
        if image_embedding is not None:
            sam = finished(image_embedding)
        elif self._sam_encoder is not None:
            sam = self._sam_encoder.submit(image, timings)  # started first: it overlaps CLIP too
        with timed(timings, "clip", device):
            clip_pixels = preprocess_clip(image, config.vision.image_size)[None].to(device)
            image_tokens = self.model.encode_clip(clip_pixels)
        if sam is None:
            with timed(timings, "sam_encoder", device):
                sam = finished(self.embed_image(image))
        self._image_tokens, self._sam = image_tokens, sam
        self._image_key, self._image_size = key, tuple(image.shape[:2])

    @property
    def image_embedding(self) -> ImageEmbedding | None:
        """SAM's embedding of the image set for `predict` (None before `set_image`); waits
        for the encoder when it is still running."""
        return None if self._sam is None else self._sam.result()

    def warm_up(self, image_size: tuple[int, int] = (480, 640)) -> dict[str, float]:
        """Run every stage once on a gray image, so the first real command is not slow:
        CLIP, SAM's encoder (its thread too), the prompt, prefill and a few decode steps
        (the compile and CUDA-graph capture of a compiled decoder), the [SEG] head, the
        mask decoder and post-processing. The image is reset afterwards.

        Returns:
            dict[str, float]: seconds per stage, and "total".
        """
        start = time.perf_counter()
        self.set_image(np.full((*image_size, 3), 128, np.uint8))
        timings: dict[str, float] = {}
        try:
            prediction = self._answer("Please segment the object in this image.", None, min(self.max_new_tokens, 8))
            timings.update(prediction.timings)
            with torch.no_grad():
                seg = self.model.project_seg(self.model.language_model.model.embed_tokens.weight[:1])
            self.decode(seg, self.image_embedding, timings)  # waits for SAM's encoder
            timings.update({f"image_{stage}": seconds for stage, seconds in self.image_timings.items()})
        finally:
            self.reset_image()
        timings["total"] = time.perf_counter() - start
        return timings

    def predict(
        self,
        command: str,
        conversation: Conversation | None = None,
        *,
        on_mask: Callable[[EarlyMask], None] | None = None,
        on_text: Callable[[str], None] | None = None,
        image_key: Hashable | None = None,
    ) -> Prediction:
        """Answer `command` about the current image.

        Arguments:
            command (str): what to segment or ask, in plain words.
            conversation (Conversation | None): earlier turns to answer in the context of;
                the new turn is appended to it. None starts a fresh conversation.
            on_mask (callable(EarlyMask) | None): called once per [SEG] the moment it is
                generated, with its decoded mask, while the answer goes on.
            on_text (callable(str) | None): called with the answer's text as it grows, in
                increments whose concatenation is the final text.
            image_key (hashable | None): the key the image must have been set with;
                RuntimeError when another image is set.

        Returns:
            Prediction: text, masks, mask logits, scores and timings. Its masks, logits,
                scores and embeddings are those published through on_mask, stacked.

        Raises:
            ContextOverflowError: when the prompt leaves no room in the model's context.
            Whatever on_mask or on_text raise (the answer is abandoned).
        """
        return self._answer(command, conversation, self.max_new_tokens, on_mask, on_text, image_key)

    @torch.no_grad()
    def _answer(self, command, conversation, max_new_tokens, on_mask=None, on_text=None, image_key=None):
        start = time.perf_counter()
        if not self.is_image_set:
            raise RuntimeError("call set_image() before predict()")
        if image_key is not None and image_key != self._image_key:
            raise RuntimeError(f"the image set is {self._image_key!r}, not {image_key!r}")
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

        stream = AnswerStream(self.tokenizer, config.seg_token_id, self.short_answer, on_text)
        early: list[EarlyMask] = []

        def on_token(token: int, hidden: torch.Tensor) -> bool:
            stop = stream.add(token)
            if token == config.seg_token_id:
                early.append(self._early_mask(len(early), hidden, stream.text(), start, timings))
                if on_mask is not None:
                    on_mask(early[-1])
            stream.emit()
            return stop

        try:
            generation = self.model.generate(
                embeds, max_new_tokens, cache=self._cache, decoder=self.decoder, on_token=on_token
            )
        except BaseException:
            # The cache may hold a half-extended prompt now; start the next prompt afresh.
            self._cache, self._cached_ids = None, []
            raise
        timings.update(generation.timings)
        self._cached_ids = ids[0].tolist() + generation.token_ids[:-1]
        self._cache = generation.cache

        text = stream.finish()
        conversation.append(command.strip(), text, config.mm_use_im_start_end)
        eos = config.llm.eos_token_id
        truncated = generation.limited_by_context and not generation.stopped and generation.token_ids[-1:] != [eos]
        prediction = self._stacked(early, text, timings, truncated)
        timings["total"] = time.perf_counter() - start
        return prediction

    def _early_mask(self, index: int, hidden: torch.Tensor, text: str, start: float, timings: dict) -> EarlyMask:
        """Decode one [SEG]'s mask from the hidden state that chose it."""
        embedding = self.model.project_seg(hidden[None])  # two linear layers: untimed
        if not self._sam.done():
            with timed(timings, "sam_encoder_wait", self.model.device):
                self._sam.result()
        masks, logits, scores = self.decode(embedding, self.image_embedding, timings)
        seconds = time.perf_counter() - start
        timings.setdefault("first_mask", seconds)
        return EarlyMask(index, masks[0], logits[0], float(scores[0]), embedding[0], text, seconds)

    def _stacked(self, early: list[EarlyMask], text: str, timings: dict, truncated: bool) -> Prediction:
        """The Prediction whose masks are the early masks, in order."""
        if early:
            masks = np.stack([m.mask for m in early])
            logits = np.stack([m.mask_logits for m in early])
            scores = np.array([m.score for m in early], dtype=np.float32)
            embeddings = torch.stack([m.seg_embedding for m in early])
        else:
            masks = np.zeros((0, *self._image_size), dtype=bool)
            logits = np.zeros((0, *self._image_size), dtype=np.float32)
            scores = np.zeros((0,), dtype=np.float32)
            embeddings = self.model.project_seg(self._image_tokens.new_zeros((0, self.model.config.hidden_size)))
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
        if shared == 0:
            self._cache = None
        else:
            crop_to(self._cache, shared)
        return shared
