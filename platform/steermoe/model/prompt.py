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
SYSTEM = "\x00SYSTEM\x00"

FALLBACK_TEMPLATE = "System: {system}\nUser: {audio}\n{instruction}\nAssistant: "
FALLBACK_TEMPLATE_NO_SYSTEM = "User: {audio}\n{instruction}\nAssistant: "


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


def _without_system_turn(text: str, after_target: str, tokenizer) -> str:
    """Cut the turn holding the :data:`SYSTEM` placeholder out of a rendered prompt.

    The turn runs from the start (after a BOS token that is not itself the turn opener, as
    Llama 3's ``<|begin_of_text|>``) to the first end-of-turn marker after the placeholder
    (the first special token after a target in a rendered answer, or a newline for plain
    templates), and the whitespace after it.
    """
    at = text.index(SYSTEM)
    start = 0
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and len(bos) <= at:
        header = text[len(bos) : at]
        if any(header.startswith(t) for t in tokenizer.all_special_tokens if t):
            start = len(bos)
    rest = text[at + len(SYSTEM) :]
    special = [t for t in tokenizer.all_special_tokens if t and t in after_target]
    marks = [(after_target.index(t), t) for t in special]
    end_mark = min(marks)[1] if marks else None
    if end_mark and end_mark in rest:
        cut = rest.index(end_mark) + len(end_mark)
    else:
        cut = rest.index("\n") + 1 if "\n" in rest else 0
    while cut < len(rest) and rest[cut] in " \n":
        cut += 1
    return text[:start] + rest[cut:]


def build_template(tokenizer, system_prompt: str | None) -> PromptTemplate:
    """Render the LLM's chat template around placeholders and split it into token pieces.

    ``system_prompt`` None or "" gives a prompt without any system turn: the turn is rendered
    around a placeholder and then cut out, so a default system turn that a chat template
    inserts when none is given (SmolLM2's does) is not there either.
    """
    system = system_prompt or SYSTEM
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": f"{AUDIO}\n{INSTRUCTION}"},
    ]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": TARGET}], tokenize=False
        )
        after_target = full.split(TARGET, 1)[1]
        if not system_prompt:
            text = _without_system_turn(text, after_target, tokenizer)
    else:
        template = FALLBACK_TEMPLATE if system_prompt else FALLBACK_TEMPLATE_NO_SYSTEM
        text = template.format(system=system, audio=AUDIO, instruction=INSTRUCTION)
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
