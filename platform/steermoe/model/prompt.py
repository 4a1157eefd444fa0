"""Chat prompts assembled with the LLM's own chat template, audio in place of a placeholder.

The rendered conversation is split once into token pieces::

    [prefix ids] [audio embeddings] [mid ids] [instruction ids] [suffix ids] | [target] [eot]

``prefix`` holds the system turn and the start of the user turn; ``suffix`` closes the user
turn and opens the assistant turn. Training appends the target and the end-of-turn token;
everything before them is masked (-100) in the labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

AUDIO = "\x00AUDIO\x00"
INSTRUCTION = "\x00INSTRUCTION\x00"
TARGET = "\x00TARGET\x00"

FALLBACK_TEMPLATE = "System: {system}\nUser: {audio}\n{instruction}\nAssistant: "


@dataclass(frozen=True)
class PromptTemplate:
    """Token pieces of the chat prompt plus the token that ends the assistant turn."""

    prefix_ids: tuple[int, ...]
    mid_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    end_ids: tuple[int, ...]
    stop_ids: tuple[int, ...]
    rendered: str

    def instruction_ids(self, tokenizer, instruction: str) -> torch.Tensor:
        """Ids after the audio: ``mid + instruction + suffix`` (1-D LongTensor)."""
        ids = tokenizer(instruction, add_special_tokens=False)["input_ids"]
        return torch.tensor([*self.mid_ids, *ids, *self.suffix_ids], dtype=torch.long)

    def target_ids(self, tokenizer, target: str) -> torch.Tensor:
        """Ids of the assistant answer plus the end-of-turn token(s) (1-D LongTensor)."""
        ids = tokenizer(target, add_special_tokens=False)["input_ids"]
        return torch.tensor([*ids, *self.end_ids], dtype=torch.long)


def build_template(tokenizer, system_prompt: str) -> PromptTemplate:
    """Render the LLM's chat template around placeholders and split it into token pieces."""
    messages = [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": f"{AUDIO}\n{INSTRUCTION}"},
    ]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": TARGET}], tokenize=False
        )
        after_target = full.split(TARGET, 1)[1]
    else:
        text = FALLBACK_TEMPLATE.format(system=system_prompt, audio=AUDIO, instruction=INSTRUCTION)
        after_target = tokenizer.eos_token or ""
    prefix, rest = text.split(AUDIO, 1)
    mid, suffix = rest.split(INSTRUCTION, 1)

    def encode(s: str) -> tuple[int, ...]:
        return tuple(tokenizer(s, add_special_tokens=False)["input_ids"]) if s else ()

    special = set(tokenizer.all_special_ids)
    end = [i for i in encode(after_target) if i in special][:1]
    eos = tokenizer.eos_token_id
    if not end:
        if eos is None:
            raise ValueError("the LLM tokenizer has neither a chat end-of-turn nor an eos token")
        end = [eos]
    stops = tuple(dict.fromkeys([*end, *([eos] if eos is not None else [])]))
    return PromptTemplate(
        prefix_ids=encode(prefix),
        mid_ids=encode(mid),
        suffix_ids=encode(suffix),
        end_ids=tuple(end),
        stop_ids=stops,
        rendered=text,
    )
