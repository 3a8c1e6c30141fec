"""Greedy decoding steps of the language model: the KV cache kind and an eager or compiled step.

A decoder turns the prompt into its first answer token (`prefill`) and then one token
into the next (`step`); each returns the final-layer hidden state that chose the token
(a [SEG]'s hidden state is its mask prompt) and the token id. `LisaModel.generate` runs
the loop; the predictor keeps one decoder, and with it one cache, for all its commands.

Modes (DECODE_MODES):
  eager     transformers' DynamicCache, grown by one position per token.
  static    a StaticCache as long as the model's context, allocated once and reused across
            commands (cropped to the shared prefix like the dynamic one): fixed shapes and
            fixed tensor addresses, what compiling and CUDA graphs need.
  compiled  static, with the one-token step (embedding, decoder layers, lm_head, argmax)
            compiled by torch.compile; on CUDA in "reduce-overhead" mode, which replays
            the step as a CUDA graph. If compiling fails (no C++ compiler, an unsupported
            platform, a torch without dynamo), it warns once and steps eagerly.
The language model's attention is transformers' SDPA ("sdpa", its default).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from transformers import DynamicCache, StaticCache

DECODE_MODES = ("eager", "static", "compiled")


class TokenDecoder:
    """Prefill and one-token steps of a LlamaForCausalLM with greedy token choice.

    Arguments:
        language_model (LlamaForCausalLM): the model's language model.
        mode (str): one of DECODE_MODES.
        max_cache_len (int | None): positions a static cache holds; None: the model's context.
    """

    def __init__(self, language_model: nn.Module, mode: str = "eager", max_cache_len: int | None = None):
        if mode not in DECODE_MODES:
            raise ValueError(f"unknown decode mode {mode!r}; choose one of {DECODE_MODES}")
        self.language_model = language_model
        self.mode = mode
        self.max_cache_len = max_cache_len or language_model.config.max_position_embeddings
        self._static_cache: StaticCache | None = None
        self._compiled = None
        if mode == "compiled":
            self._compiled = self._compile(self._step)

    @property
    def mode_in_use(self) -> str:
        """The mode steps run in: "static" once compiling failed in "compiled" mode."""
        return "static" if self.mode == "compiled" and self._compiled is None else self.mode

    def empty_cache(self):
        """A cache holding nothing: a new DynamicCache, or the one static cache cropped to empty."""
        if self.mode == "eager":
            return DynamicCache(config=self.language_model.config)
        if self._static_cache is None:
            self._static_cache = StaticCache(config=self.language_model.config, max_cache_len=self.max_cache_len)
        else:
            crop_to(self._static_cache, 0)
        return self._static_cache

    def prefill(self, embeds: torch.Tensor, cache) -> tuple[torch.Tensor, int]:
        """Run `embeds` [1,T,H] on top of `cache` (extended in place); the last position's
        final-layer hidden state [1,H] and the token it chooses."""
        out = self.language_model.model(inputs_embeds=embeds, cache=cache, use_cache=True)
        hidden = out.last_hidden_state[:, -1]
        return hidden, int(self.language_model.lm_head(hidden).argmax(-1))

    def step(self, token: int, cache) -> tuple[torch.Tensor, int]:
        """Run one token on top of `cache` (extended in place); its final-layer hidden state
        [1,H] (a copy the next step does not overwrite) and the token it chooses."""
        ids = torch.tensor([[token]], device=self.language_model.lm_head.weight.device)
        if self._compiled is not None:
            length = int(cache.get_seq_length())
            try:
                hidden, chosen = self._compiled(ids, cache)
            except Exception as error:  # compiling happens at the first call; any failure: step eagerly
                warnings.warn(f"compiled decode step failed ({type(error).__name__}: {error}); decoding eagerly",
                              RuntimeWarning, stacklevel=2)
                self._compiled = None
                crop_to(cache, length)  # undo a half-done update before stepping again
                return self.step(token, cache)
            # CUDA graphs reuse their output buffers on the next replay: keep a copy.
            return hidden.clone(), int(chosen)
        hidden, chosen = self._step(ids, cache)
        return hidden, int(chosen)

    def _step(self, ids: torch.Tensor, cache) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.language_model.model(input_ids=ids, cache=cache, use_cache=True)
        hidden = out.last_hidden_state[:, -1]
        return hidden, self.language_model.lm_head(hidden).argmax(-1)

    def _compile(self, function):
        on_cuda = self.language_model.lm_head.weight.device.type == "cuda"
        try:
            return torch.compile(function, mode="reduce-overhead" if on_cuda else None, dynamic=False)
        except Exception as error:
            warnings.warn(f"torch.compile is unavailable ({type(error).__name__}: {error}); decoding eagerly",
                          RuntimeWarning, stacklevel=3)
            return None


class FullSequenceDecoder:
    """The reference's decoding, kept for comparisons: no KV cache, every step re-runs the
    whole sequence (prompt and all tokens so far). `cache` arguments are ignored."""

    mode = mode_in_use = "full_sequence"

    def __init__(self, language_model: nn.Module):
        self.language_model = language_model
        self._sequence: torch.Tensor | None = None

    def empty_cache(self):
        return None

    def prefill(self, embeds: torch.Tensor, cache=None) -> tuple[torch.Tensor, int]:
        self._sequence = embeds
        return self._last(embeds)

    def step(self, token: int, cache=None) -> tuple[torch.Tensor, int]:
        embed = self.language_model.get_input_embeddings()
        ids = torch.tensor([[token]], device=self._sequence.device)
        self._sequence = torch.cat([self._sequence, embed(ids)], dim=1)
        return self._last(self._sequence)

    def _last(self, sequence: torch.Tensor) -> tuple[torch.Tensor, int]:
        out = self.language_model.model(inputs_embeds=sequence, use_cache=False)
        hidden = out.last_hidden_state[:, -1]
        return hidden, int(self.language_model.lm_head(hidden).argmax(-1))


def crop_to(cache, length: int) -> None:
    """Shorten `cache` to its first `length` positions, in place (a static cache keeps its tensors)."""
    surplus = int(cache.get_seq_length()) - length
    if surplus > 0:
        cache.crop(-surplus)
