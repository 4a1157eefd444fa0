"""SteerMoE: frozen Whisper encoder + steering MoE + projector + frozen causal LM.

Shape legend: B batch, M mel bins, F mel frames, T encoder frames, D encoder width,
S pooling stride, A = T/S audio tokens, H LLM width, P prompt length, V vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from steermoe.model.ctc import CtcHead
from steermoe.model.encoder import WhisperEncoderWrapper
from steermoe.model.projector import Projector
from steermoe.model.prompt import PromptTemplate
from steermoe.model.steering import SteeringMoE
from steermoe.model.tool_grammar import ASCII, NON_ASCII, ToolCallGrammar

IGNORE = -100
# Silent mel frames kept after the longest clip: the conv stem looks 2 frames ahead.
_TAIL_FRAMES = 5


class Trainable(nn.Module):
    """Everything that trains: the steering MoE (optional), the projector and the auxiliary
    CTC head (optional; only its blank and scale train)."""

    def __init__(
        self,
        *,
        steering: SteeringMoE | None,
        projector: Projector,
        ctc: CtcHead | None = None,
        ctc_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.steering = steering
        self.projector = projector
        self.ctc = ctc
        self.ctc_weight = ctc_weight


@dataclass
class Batch:
    """One collated batch. Token pieces stay per example; the model assembles sequences."""

    ids: list[str]
    # B, M, F log-mel (right-padded, F even) and B valid mel frames.
    features: torch.Tensor
    feature_lengths: torch.Tensor
    # Per example: ids after the audio (instruction + assistant header).
    prompt_ids: list[torch.Tensor]
    # Per example: answer ids + end-of-turn (None at inference time).
    target_ids: list[torch.Tensor] | None = None
    # Per example: ids of the words spoken (the CTC targets; None = unknown, no CTC term).
    # None for the whole batch = the targets are the transcripts (ASR).
    transcript_ids: list[list[int] | None] | None = None
    durations_s: list[float] = field(default_factory=list)

    def to(self, device: torch.device | str) -> Batch:
        self.features = self.features.to(device)
        self.feature_lengths = self.feature_lengths.to(device)
        return self


@dataclass(frozen=True)
class Decoding:
    """How one example is decoded. The default is greedy, the decoding evaluation measures.

    Raises:
        ValueError: a value out of range (never repaired silently).
    """

    # Softmax temperature; 0 = greedy (argmax), > 0 samples from the tempered distribution.
    temperature: float = 0.0
    # Nucleus sampling: draw only from the most likely tokens whose mass reaches top_p.
    top_p: float = 1.0
    # Seed of this example's own generator (None = a fresh random seed); unused when greedy.
    seed: int | None = None
    # Decoding stops once the text contains one of these; the text is cut before it.
    stop: tuple[str, ...] = ()
    # Holds the answer to a call list of these tools (see `tool_grammar`); None = free text.
    tool_calls: ToolCallGrammar | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generator(self) -> torch.Generator | None:
        """A CPU generator for this example alone (the same draws on any device, in any batch)."""
        if self.greedy:
            return None
        gen = torch.Generator()
        if self.seed is None:
            gen.seed()
        else:
            gen.manual_seed(self.seed % 2**64)  # OpenAI seeds are signed 64-bit
        return gen


@dataclass
class Generation:
    """Decoding results, one entry per example."""

    # The answers; one held to a tool-call grammar that the budget or the repetition guard
    # cut mid-list ends with the grammar's completion (``ToolCallGrammar.completion``), so it
    # parses; its token ids and finish reason stay as decoded.
    texts: list[str]
    token_ids: list[list[int]]
    # "stop" (end of turn, a stop string or the repetition guard) or "length" (budget spent).
    finish_reasons: list[str] = field(default_factory=list)
    # Whether the repetition guard ended the example (its repeats dropped).
    looped: list[bool] = field(default_factory=list)
    # Whether a tool-call grammar's completion closed the text.
    completed: list[bool] = field(default_factory=list)

    @property
    def num_tokens(self) -> list[int]:
        return [len(t) for t in self.token_ids]


class SteerMoEModel(nn.Module):
    """The full model; only ``self.trainable`` has parameters with ``requires_grad``.

    Args:
        encoder: frozen encoder wrapper (real-length encoding, steering hooks).
        llm: frozen Hugging Face causal LM.
        trainable: steering MoE + projector.
        feature_extractor: the encoder's ``WhisperFeatureExtractor``.
        tokenizer: the LLM's tokenizer.
        template: chat prompt pieces for this tokenizer.
        identity: backbone identities written into checkpoint headers.
    """

    def __init__(
        self,
        *,
        encoder: WhisperEncoderWrapper,
        llm: nn.Module,
        trainable: Trainable,
        feature_extractor,
        tokenizer,
        template: PromptTemplate,
        identity: dict,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.llm = llm
        self.trainable = trainable
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.template = template
        self.identity = identity
        # How fc prompts write tool lists (`model.tool_prompt`); set by build_model.
        self.tool_prompt = "full"
        self._vocab: _Vocab | None = None  # token texts, built on the first grammar decode
        self.freeze_backbones()

    # ------------------------------------------------------------------ set-up helpers

    def freeze_backbones(self) -> None:
        """requires_grad False and eval mode for both backbones (dropout off for good)."""
        for module in (self.encoder, self.llm):
            module.requires_grad_(False)
            module.eval()

    def train(self, mode: bool = True) -> SteerMoEModel:
        # Backbones stay in eval mode whatever the caller asks; only the trainable part moves.
        self.training = mode
        self.trainable.train(mode)
        self.encoder.eval()
        # HF only recomputes activations in train mode; the backbones have no active dropout
        # (Whisper/Llama/Qwen attention and hidden dropout are 0 at inference settings).
        self.llm.train(mode and getattr(self.llm, "is_activation_checkpointing", False))
        return self

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.trainable.named_parameters() if p.requires_grad)

    @property
    def steering(self) -> SteeringMoE | None:
        return self.trainable.steering

    @property
    def max_audio_s(self) -> float:
        """Longest clip the encoder accepts (30 s for Whisper)."""
        return self.encoder.max_frames * self.feature_extractor.hop_length / 16000

    @property
    def device(self) -> torch.device:
        return next(self.trainable.parameters()).device

    # ------------------------------------------------------------------------ inputs

    def featurize(self, audios: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """16 kHz waves -> log-mel (B, M, F) right-padded to an even F, and valid frames (B,).

        Every clip is followed by silence (zeros), as in Whisper's 30 s padding, so a clip's
        features and encoding do not depend on which clips share its batch.
        """
        hop = self.feature_extractor.hop_length
        limit = self.encoder.max_frames
        lengths = torch.tensor([len(a) // hop for a in audios])
        if int(lengths.max()) > limit:
            raise ValueError(
                f"clip longer than the encoder window ({limit * hop / 16000:.0f} s): "
                f"{int(lengths.max()) * hop / 16000:.2f} s"
            )
        width = max(len(a) for a in audios) + _TAIL_FRAMES * hop
        padded = [np.pad(np.asarray(a, dtype=np.float32), (0, width - len(a))) for a in audios]
        features = self.feature_extractor(
            padded, sampling_rate=16000, padding="longest", return_tensors="pt"
        )["input_features"]
        frames = min(limit, int(lengths.max()) + _TAIL_FRAMES - 1)
        frames += frames % 2  # conv2 has stride 2: keep F even
        return features[..., :frames], lengths

    def collate(
        self,
        audios: Sequence[np.ndarray],
        instructions: Sequence[str],
        targets: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        transcripts: Sequence[str | None] | None = None,
    ) -> Batch:
        """Build a :class:`Batch` from waves, instructions and (for training) targets.

        ``transcripts`` are the words spoken in each clip (None where unknown), the targets of
        the CTC loss; without them the targets stand in (right for ASR only).
        """
        features, lengths = self.featurize(audios)
        prompt = [self.template.instruction_ids(self.tokenizer, s) for s in instructions]
        target = None
        if targets is not None:
            target = [self.template.target_ids(self.tokenizer, s) for s in targets]
        spoken = None
        if transcripts is not None:
            spoken = [
                self.tokenizer(s, add_special_tokens=False)["input_ids"] if s else None
                for s in transcripts
            ]
        return Batch(
            ids=list(ids) if ids is not None else [str(i) for i in range(len(audios))],
            features=features,
            feature_lengths=lengths,
            prompt_ids=prompt,
            target_ids=target,
            transcript_ids=spoken,
            durations_s=[len(a) / 16000 for a in audios],
        )

    # ----------------------------------------------------------------------- forward

    def encode(
        self, features: torch.Tensor, feature_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel (B, M, F) -> audio embeddings (B, A, H) in the LLM dtype and mask (B, A)."""
        audio, audio_mask = self.project(features, feature_lengths)
        return audio.to(self._llm_dtype), audio_mask

    def project(
        self, features: torch.Tensor, feature_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel (B, M, F) -> audio embeddings (B, A, H) in the projector's (fp32) dtype."""
        steering = self.trainable.steering
        if steering is not None:
            steering.stats.clear()
        hidden, mask = self.encoder(features, feature_lengths, steering=steering)  # B, T, D
        return self.trainable.projector(hidden, mask)  # B, T, D -> B, A, H

    @property
    def _llm_dtype(self) -> torch.dtype:
        return self.llm.get_input_embeddings().weight.dtype

    def _embed(self, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        table = self.llm.get_input_embeddings()
        ids = torch.as_tensor(ids, dtype=torch.long, device=table.weight.device)
        return table(ids)  # P -> P, H

    def _sequences(
        self, audio: torch.Tensor, audio_mask: torch.Tensor, batch: Batch, with_target: bool
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per example: embeddings [prefix; audio; prompt; target?] and labels (-100 but target)."""
        prefix = self._embed(self.template.prefix_ids)
        embeds, labels = [], []
        for i in range(audio.shape[0]):
            a = audio[i, audio_mask[i]]  # A_i, H (padded audio frames dropped)
            prompt = self._embed(batch.prompt_ids[i])
            parts = [prefix, a, prompt]
            n_context = prefix.shape[0] + a.shape[0] + prompt.shape[0]
            label = torch.full((n_context,), IGNORE, dtype=torch.long, device=a.device)
            if with_target:
                target = batch.target_ids[i].to(a.device)
                parts.append(self._embed(target))
                label = torch.cat([label, target])
            embeds.append(torch.cat(parts))
            labels.append(label)
        return embeds, labels

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Teacher-forced loss on target + end-of-turn tokens only.

        Returns:
            ``loss`` (LM loss + weighted routing aux losses + weighted CTC loss), ``lm_loss``,
            ``aux_loss``, ``ctc_loss`` (0 without a CTC head), ``num_tokens`` (target tokens).
        """
        if batch.target_ids is None:
            raise ValueError("forward() needs target_ids; use generate() for inference")
        projected, audio_mask = self.project(batch.features, batch.feature_lengths)
        audio = projected.to(self._llm_dtype)
        embeds, labels = self._sequences(audio, audio_mask, batch, with_target=True)
        lengths = [e.shape[0] for e in embeds]
        width = max(lengths)
        x = torch.stack([F.pad(e, (0, 0, 0, width - e.shape[0])) for e in embeds])  # B, P, H
        y = torch.stack([F.pad(lab, (0, width - lab.shape[0]), value=IGNORE) for lab in labels])
        attn = (
            torch.arange(width, device=x.device)[None, :]
            < torch.tensor(lengths, device=x.device)[:, None]
        )  # B, P
        hidden = self.llm.base_model(inputs_embeds=x, attention_mask=attn.long()).last_hidden_state
        # Position p predicts token p+1: logits only where the next label is a target token.
        next_labels = y[:, 1:]  # B, P-1
        where = next_labels != IGNORE
        logits = self.llm.get_output_embeddings()(hidden[:, :-1][where])  # N_tgt, H -> N_tgt, V
        lm_loss = F.cross_entropy(logits.float(), next_labels[where])
        aux = None
        if self.trainable.steering is not None:
            aux = self.trainable.steering.aux_loss()
        loss = lm_loss if aux is None else lm_loss + aux
        ctc_loss = torch.zeros(())
        if self.trainable.ctc is not None:
            if batch.transcript_ids is not None:
                texts = [None if t is None else torch.tensor(t) for t in batch.transcript_ids]
            else:
                n_end = len(self.template.end_ids)
                texts = [t[: len(t) - n_end] for t in batch.target_ids]  # end-of-turn dropped
            table = self.llm.get_input_embeddings().weight
            ctc_loss = self.trainable.ctc(projected, audio_mask, texts, table)
            loss = loss + self.trainable.ctc_weight * ctc_loss
        return {
            "loss": loss,
            "lm_loss": lm_loss.detach(),
            "aux_loss": (aux if aux is not None else torch.zeros(())).detach(),
            "ctc_loss": ctc_loss.detach(),
            "num_tokens": where.sum().detach(),
        }

    # -------------------------------------------------------------------- generation

    @torch.no_grad()
    def generate(
        self,
        batch: Batch,
        *,
        max_new_tokens: int | Sequence[int] = 64,
        decoding: Decoding | Sequence[Decoding] | None = None,
        on_token=None,
        max_repeats: int = 4,
    ) -> Generation:
        """Batched decoding with a KV cache, left padding and a correct mask.

        Greedy by default (deterministic). A sampled example draws from its own generator,
        seeded per example, once per token it emits; so with a seed, the result for an
        example does not depend on what it is batched with, greedy or sampled.

        Args:
            batch: collated inputs (targets ignored).
            max_new_tokens: decoding budget, one for all or one per example (a batch with
                mixed budgets decodes each example exactly as it would alone).
            decoding: temperature, top_p, seed and stop strings, one for all or one per
                example (None = greedy, no stop strings).
            on_token: optional ``on_token(step, new_ids: list[int|None])`` callback per step
                (``None`` for finished examples), used for streaming.
            max_repeats: repetition guard: an example stops once its output ends with the
                same 1-24 token pattern this many times in a row; the repeats are dropped
                (0 disables).
        """
        from transformers import DynamicCache

        audio, audio_mask = self.encode(batch.features, batch.feature_lengths)
        embeds, _ = self._sequences(audio, audio_mask, batch, with_target=False)
        b = len(embeds)
        budgets = (
            [int(max_new_tokens)] * b
            if isinstance(max_new_tokens, int)
            else [int(n) for n in max_new_tokens]
        )
        if len(budgets) != b:
            raise ValueError(f"max_new_tokens has {len(budgets)} budgets for {b} examples")
        if decoding is None or isinstance(decoding, Decoding):
            opts = [decoding or Decoding()] * b
        else:
            opts = list(decoding)
        if len(opts) != b:
            raise ValueError(f"decoding has {len(opts)} entries for {b} examples")
        generators = [o.generator() for o in opts]
        lengths = torch.tensor([e.shape[0] for e in embeds], device=audio.device)
        width = int(lengths.max())
        x = torch.stack([F.pad(e, (0, 0, width - e.shape[0], 0)) for e in embeds])  # B, P, H
        attn = (torch.arange(width, device=x.device)[None, :] >= (width - lengths)[:, None]).long()
        positions = (attn.cumsum(-1) - 1).clamp_min(0)  # B, P: left padding starts at 0
        stops = torch.tensor(self.template.stop_ids, device=x.device)
        cache = DynamicCache()
        done = torch.zeros(b, dtype=torch.bool, device=x.device)
        out: list[list[int]] = [[] for _ in range(b)]
        reasons = ["length"] * b
        looped = [False] * b
        cut: list[str | None] = [None] * b  # text before a stop string, once one appears
        inputs = x
        for step in range(max(budgets, default=0)):
            logits = self.llm(
                inputs_embeds=inputs,
                attention_mask=attn,
                position_ids=positions,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1]  # B, V
            token = logits.float().argmax(-1)  # B
            for i in range(b):
                if done[i]:
                    continue
                if opts[i].tool_calls is not None:
                    token[i] = self._allowed_token(logits[i], out[i], opts[i], generators[i])
                elif generators[i] is not None:  # one draw per emitted token
                    token[i] = _sample(logits[i], opts[i], generators[i])
            finished_now = torch.isin(token, stops)
            emitted: list[int | None] = []
            for i in range(b):
                if done[i] or finished_now[i]:
                    if not done[i]:  # end of turn
                        reasons[i] = "stop"
                    emitted.append(None)
                    continue
                out[i].append(int(token[i]))
                emitted.append(int(token[i]))
                grammar = opts[i].tool_calls
                text = self._text(out[i]) if opts[i].stop or grammar is not None else ""
                if opts[i].stop:
                    cut[i] = _cut_at_stop(text, opts[i].stop)
                closed = cut[i] is not None or (grammar is not None and grammar.closed(text))
                if not closed and max_repeats and _trim_repeats(out[i], max_repeats):
                    looped[i] = True
                if closed or looped[i] or len(out[i]) >= budgets[i]:
                    finished_now[i] = True
                    hit_budget = cut[i] is None and len(out[i]) >= budgets[i]
                    reasons[i] = "length" if hit_budget else "stop"
            if on_token is not None:
                on_token(step, emitted)
            done |= finished_now
            if bool(done.all()):
                break
            inputs = self._embed(token)[:, None, :]  # B -> B, 1, H
            attn = torch.cat([attn, torch.ones(b, 1, dtype=attn.dtype, device=attn.device)], 1)
            positions = positions[:, -1:] + 1
        texts = [(c if c is not None else self._text(ids)).strip() for c, ids in zip(cut, out)]
        completed = [False] * b
        for i, opt in enumerate(opts):
            tail = opt.tool_calls.completion(texts[i]) if opt.tool_calls is not None else None
            if tail:
                texts[i] += tail
                completed[i] = True
        return Generation(
            texts=texts,
            token_ids=out,
            finish_reasons=reasons,
            looped=looped,
            completed=completed,
        )

    # ------------------------------------------------------------ grammar decoding

    def _text(self, ids: list[int]) -> str:
        """The text of generated token ids (special tokens dropped)."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _allowed_token(
        self,
        logits: torch.Tensor,
        ids: list[int],
        opts: Decoding,
        generator: torch.Generator | None,
    ) -> int:
        """The next token of one example under its tool-call grammar: the argmax (or a draw)
        over the tokens that keep the answer viable.

        The likeliest candidates are tried first (usually the first one fits); after
        ``_FREE_TRIES`` misses, tokens whose first character cannot follow are masked out in
        one go. Removing only tokens that cannot fit keeps greedy decoding the exact argmax
        over the allowed tokens and sampling an exact draw from their renormalized mass.
        """
        grammar = opts.tool_calls
        assert grammar is not None
        text = self._text(ids)

        def pick(scores: torch.Tensor) -> int:
            return int(scores.argmax()) if generator is None else _sample(scores, opts, generator)

        # Free text (``auto`` mode), or token texts that joined differently: left free.
        if (text and not grammar.constrains(text)) or not grammar.viable(text):
            return pick(logits.float())
        vocab = self._vocabulary(logits.shape[-1])
        stops = set(self.template.stop_ids)
        may_stop = grammar.may_stop(text)

        def fits(tok: int) -> bool:
            if tok in stops:
                return may_stop
            piece = vocab.texts[tok]
            return bool(piece) and grammar.viable(text + piece)

        scores = logits.float().clone()
        misses = 0
        while True:
            if misses == _FREE_TRIES:
                allowed = torch.zeros(len(_CLASSES) + 2, dtype=torch.bool)
                for c in grammar.next_chars(text):
                    allowed[_CLASSES.index(c)] = True
                keep = allowed[vocab.first]
                keep[list(stops)] = may_stop
                scores[~keep.to(scores.device)] = float("-inf")
            if not bool(torch.isfinite(scores).any()):
                # Nothing fits: cannot happen with a byte-level vocabulary (each character the
                # grammar allows is a token of its own); end the turn.
                return self.template.stop_ids[0]
            tok = pick(scores)
            if fits(tok):
                return tok
            scores[tok] = float("-inf")
            misses += 1

    def _vocabulary(self, size: int) -> _Vocab:
        if self._vocab is None or len(self._vocab.texts) != size:
            n = len(self.tokenizer)
            texts = self.tokenizer.batch_decode(
                [[i] for i in range(min(n, size))], skip_special_tokens=True
            )
            texts += [""] * (size - len(texts))
            first = [_char_class(t) for t in texts]
            self._vocab = _Vocab(texts=texts, first=torch.tensor(first, dtype=torch.long))
        return self._vocab


# Misses of the likeliest candidates before the first-character mask is built.
_FREE_TRIES = 8
# First-character classes of a token: each ASCII character the grammar tries, then all
# non-ASCII characters (``NON_ASCII``), then everything else (empty texts, other control
# characters: never allowed).
_CLASSES = ASCII + NON_ASCII


def _char_class(text: str) -> int:
    if not text:
        return len(_CLASSES) + 1
    ch = text[0]
    if ord(ch) >= 128:
        return len(_CLASSES) - 1
    index = ASCII.find(ch)
    return index if index >= 0 else len(_CLASSES) + 1


@dataclass
class _Vocab:
    """Each token's text alone and the class of its first character (grammar decoding)."""

    texts: list[str]
    first: torch.Tensor  # V


def tool_decoding(tools: Sequence[dict] | None) -> Decoding:
    """Greedy; with ``tools``, an answer that opens a call list (``[``) is held to their
    grammar, as Serve holds ``tool_choice: auto`` (an answer in words stays free: no call).

    Raises:
        ValueError: a tool without a name, or two with the same name.
    """
    if not tools:
        return Decoding()
    return Decoding(tool_calls=ToolCallGrammar(tools, mode="auto"))


def _sample(logits: torch.Tensor, opts: Decoding, generator: torch.Generator) -> int:
    """One draw from the tempered nucleus of ``logits`` (V,), by inverse CDF.

    The uniform comes from the example's CPU ``generator``: the same seed gives the same
    draws on any device and in any batch.
    """
    probs = torch.softmax(logits.float() / opts.temperature, -1)  # V
    ranked, order = probs.sort(descending=True, stable=True)  # V, V
    if opts.top_p < 1:
        # Keep a token while the mass before it is below top_p (the most likely always stays).
        ranked = ranked * ((ranked.cumsum(-1) - ranked) < opts.top_p)
    cdf = ranked.cumsum(-1)  # V
    u = torch.rand((), generator=generator).to(cdf.device) * cdf[-1]
    index = min(int(torch.searchsorted(cdf, u, right=True)), cdf.shape[0] - 1)
    return int(order[index])


def _cut_at_stop(text: str, stop: Sequence[str]) -> str | None:
    """``text`` before the earliest stop string in it, or None if there is none."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(hits)] if hits else None


def _trim_repeats(ids: list[int], times: int, longest: int = 24) -> bool:
    """If ``ids`` ends with one pattern repeated ``times`` times, keep one copy and say so.

    Patterns up to ``longest`` tokens count: a looping sentence such as "The 1990s.\n\n" is
    ten SmolLM2 tokens.
    """
    for period in range(1, longest + 1):
        span = period * times
        if len(ids) < span:
            break
        tail = ids[-span:]
        if all(tail[j] == tail[j % period] for j in range(span)):
            del ids[len(ids) - span + period :]
            return True
    return False
