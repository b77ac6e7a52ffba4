"""Prompts in AUTOMATIC1111's weighting syntax → SDXL's embeddings, through compel.

A1111's syntax is what users of every dialect write: `(word)` ×1.1, `((word))` ×1.21, `[word]` ÷1.1,
`(word:1.3)` ×1.3, `\\(` for a literal parenthesis. compel (2.5) has its own syntax (`word+`, `(word)1.2`) and no
A1111 reader, so `parse_weights` reads A1111's grammar into (text, weight) fragments that are handed to compel as
fragments: its own parser never sees the text. Prompts longer than CLIP's 77 tokens are encoded in 77-token chunks
(A1111 does the same), and a prompt and its negative are padded to the same length.

`encode_prompts` is the one place the runner (`gpu_runner.pipeline`) turns prompts into embeddings: the base
pipeline (both text encoders) and the refiner (text_encoder_2 only) take it alike.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from compel import Compel, ReturnedEmbeddingsType
from compel.prompt_parser import Conjunction, FlattenedPrompt, Fragment

UPWEIGHT = 1.1  # A1111's factor for each level of ( ); [ ] divides by it
# A1111's tokens: an escape, an opening bracket, a `:weight)` closing, a closing bracket, or a run of plain text.
_TOKEN = re.compile(r"\\[()\[\]\\]|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:|\\", re.S)


def parse_weights(prompt: str) -> list[tuple[str, float]]:
    """A1111's prompt → (text, weight) fragments, neighbours of equal weight merged.

    An unclosed bracket weighs everything after it; a closing bracket with no opening one is plain text.
    """
    fragments: list[list[Any]] = []
    opened: list[tuple[str, int]] = []  # (bracket, index of the first fragment inside it)

    def weigh_from(start: int, factor: float) -> None:
        for fragment in fragments[start:]:
            fragment[1] *= factor

    for match in _TOKEN.finditer(prompt):
        text, weight = match.group(0), match.group(1)
        if text in ("(", "["):
            opened.append((text, len(fragments)))
        elif weight is not None and opened and opened[-1][0] == "(":
            weigh_from(opened.pop()[1], float(weight))
        elif text == ")" and opened and opened[-1][0] == "(":
            weigh_from(opened.pop()[1], UPWEIGHT)
        elif text == "]" and opened and opened[-1][0] == "[":
            weigh_from(opened.pop()[1], 1 / UPWEIGHT)
        else:
            fragments.append([text[1:] if len(text) == 2 and text[0] == "\\" else text, 1.0])
    for bracket, start in reversed(opened):
        weigh_from(start, UPWEIGHT if bracket == "(" else 1 / UPWEIGHT)
    merged: list[tuple[str, float]] = []
    for text, weight in fragments:
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + text, weight)
        else:
            merged.append((text, weight))
    return merged or [("", 1.0)]


def plain_text(prompt: str) -> str:
    """The prompt without its weighting syntax."""
    return "".join(text for text, _ in parse_weights(prompt))


@dataclass(frozen=True)
class _Encoders:
    """One compel per text encoder the pipeline has, in the order SDXL concatenates their embeddings."""

    compels: tuple[Compel, ...]  # the last one gives the pooled embedding (text_encoder_2)

    @classmethod
    def of(cls, pipe: Any) -> _Encoders:
        """The pipeline's encoders, built once per pipeline: compel caches the empty prompt's embedding (padding)."""
        if (encoders := _ENCODERS.get(pipe)) is None:
            encoders = _ENCODERS[pipe] = cls._build(pipe)
        return encoders

    @classmethod
    def _build(cls, pipe: Any) -> _Encoders:
        pairs = [(pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)]
        return cls(tuple(
            Compel(
                tokenizer=tokenizer,
                text_encoder=encoder,
                returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
                truncate_long_prompts=False,
                device=str(pipe.device),
                dtype_for_device_getter=lambda _device, dtype=encoder.dtype: dtype,
            )
            for tokenizer, encoder in pairs
            if encoder is not None  # the refiner has text_encoder_2 only
        ))

    def embeds(self, prompt: str) -> torch.Tensor:
        """(1, 77·chunks, width): every encoder's penultimate hidden states, side by side."""
        conjunction = Conjunction([FlattenedPrompt([Fragment(text, weight) for text, weight in parse_weights(prompt)])])
        parts = [compel.build_conditioning_tensor_for_conjunction(conjunction)[0] for compel in self.compels]
        return torch.cat(parts, dim=-1)

    def pooled(self, prompt: str) -> torch.Tensor:
        """text_encoder_2's pooled embedding of the prompt's text (its first 77 tokens, as A1111 and diffusers)."""
        provider = self.compels[-1].conditioning_provider
        pooled: torch.Tensor = provider.get_pooled_embeddings([plain_text(prompt)], device=str(self.compels[-1].device))
        return pooled

    def padding(self) -> torch.Tensor:
        """One chunk of the empty prompt: what a shorter embedding is extended with (compel's own rule)."""
        return torch.cat([compel.conditioning_provider.empty_z for compel in self.compels], dim=-1)


_ENCODERS: weakref.WeakKeyDictionary[Any, _Encoders] = weakref.WeakKeyDictionary()


def encode_prompts(pipe: Any, prompt: str, negative: str, images: int, guidance: float) -> dict[str, Any]:
    """One A1111-syntax prompt and its negative as the pipeline's four embedding arguments, repeated for `images`.

    An empty negative prompt is zeros where the pipeline says so (SDXL base's `force_zeros_for_empty_prompt`), as
    diffusers' own encoding does. Without classifier-free guidance the negative ones are None.
    """
    encoders = _Encoders.of(pipe)
    with torch.no_grad():
        embeds, pooled = encoders.embeds(prompt), encoders.pooled(prompt)
        negative_embeds = negative_pooled = None
        if guidance > 1 and pipe.unet.config.time_cond_proj_dim is None:  # the pipeline's own rule
            if not negative and pipe.config.get("force_zeros_for_empty_prompt", False):
                negative_embeds, negative_pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
            else:
                negative_embeds, negative_pooled = encoders.embeds(negative), encoders.pooled(negative)
                embeds, negative_embeds = _same_length([embeds, negative_embeds], encoders.padding())
    return {
        "prompt_embeds": _repeat(embeds, images),
        "negative_prompt_embeds": _repeat(negative_embeds, images),
        "pooled_prompt_embeds": _repeat(pooled, images),
        "negative_pooled_prompt_embeds": _repeat(negative_pooled, images),
    }


def stack(pipe: Any, encoded: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several `encode_prompts` answers as one batch: token lengths padded to the longest, then concatenated.

    Needed where jobs share a pipeline call: a long prompt has more 77-token chunks than a short one.
    """
    padding = _Encoders.of(pipe).padding()
    batch: dict[str, Any] = {}
    for name in encoded[0]:
        tensors = [entry[name] for entry in encoded]
        if tensors[0] is None:
            batch[name] = None
        elif tensors[0].dim() == 3:
            batch[name] = torch.cat(_same_length(tensors, padding))
        else:
            batch[name] = torch.cat(tensors)
    return batch


def _same_length(tensors: Sequence[torch.Tensor], padding: torch.Tensor) -> list[torch.Tensor]:
    """Each (n, tokens, width) tensor extended with empty-prompt chunks to the longest one's token count."""
    longest = max(t.shape[1] for t in tensors)
    chunk = padding.to(tensors[0].device, tensors[0].dtype)
    return [
        torch.cat([t, chunk.repeat(t.shape[0], (longest - t.shape[1]) // chunk.shape[1], 1)], dim=1)
        if t.shape[1] < longest else t
        for t in tensors
    ]


def _repeat(tensor: torch.Tensor | None, images: int) -> torch.Tensor | None:
    return None if tensor is None else tensor.repeat_interleave(images, dim=0)
