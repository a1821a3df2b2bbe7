"""The student: any Hugging Face causal LM (hub id or local path), optionally with a LoRA adapter,
sampled in batches with left padding.

Dialogues grow turn by turn, so the student keeps each conversation as token ids and appends the
ids of every new turn instead of re-rendering the whole chat template each time: tokenizing a joined
string can split differently from what the model generated, and re-rendering costs as much as a
small model's generation. ``ChatPieces`` learns the template's turn wrappers from a probe and checks
that appending reproduces a full render; templates where it does not (e.g. ones that rewrite past
turns) fall back to rendering the whole conversation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, StaticCache, TokenizersBackend


def load_tokenizer(name_or_path: str, **kwargs):
    """``AutoTokenizer``, except that a local ``tokenizer.json`` is used exactly as saved.

    transformers 5 rebuilds a model-specific tokenizer class's pre-tokenizer from the model type, so our
    embedded student (a Qwen2 config with its own digit-splitting BPE) would come back with Qwen2's
    whitespace splitting: code indentation would be encoded into token sequences the model never saw."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    saved = Path(name_or_path) / "tokenizer.json"
    if saved.exists():
        wanted = json.loads(saved.read_text()).get("pre_tokenizer")
        if json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") != wanted:
            tokenizer = TokenizersBackend.from_pretrained(name_or_path, **kwargs)
    return tokenizer


def _render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)


@dataclass
class ChatPieces:
    """Text that the chat template puts around a turn: ``assistant_end`` follows the student's words,
    ``user_before``/``user_after`` wrap a teacher message (``user_after`` includes the generation prompt)."""
    assistant_end: str
    user_before: str
    user_after: str

    @classmethod
    def probe(cls, tokenizer) -> ChatPieces | None:
        """The pieces, or ``None`` when appending them would not reproduce the template."""
        u1, a1, u2 = "\x01U1\x01", "\x01A1\x01", "\x01U2\x01"
        conv = [{"role": "user", "content": u1}, {"role": "assistant", "content": a1}, {"role": "user", "content": u2}]
        try:
            opening = _render(tokenizer, conv[:1], True)
            with_answer = _render(tokenizer, conv[:2], False)
            full = _render(tokenizer, conv, True)
        except Exception:
            return None
        if not (with_answer.startswith(opening + a1) and full.startswith(with_answer)):
            return None
        user_turn = full[len(with_answer):]
        if user_turn.count(u2) != 1:
            return None
        before, after = user_turn.split(u2)
        return cls(assistant_end=with_answer[len(opening) + len(a1):], user_before=before, user_after=after)


class Student:
    """A causal LM that writes the student's turns.

    ``generate(prompts)`` takes token-id lists and returns the new ids of each completion (cut at the
    end-of-turn token, which is not included) and whether it ended on its own.
    """

    def __init__(self, model, tokenizer, device: str | None = None):
        self.model = model
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.use_tokenizer(tokenizer)
        config = getattr(model, "config", None)
        self.max_length = getattr(config, "max_position_embeddings", None) or 4096

    def use_tokenizer(self, tokenizer) -> None:
        """Everything the conversation bookkeeping needs from the tokenizer (also for students whose
        sampling happens elsewhere: ``RemoteStudent``, ``grpo.VLLMStudent``)."""
        self.tokenizer = tokenizer
        self.pieces = ChatPieces.probe(tokenizer)
        self.eos_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id

    @classmethod
    def load(cls, model: str, adapter: str | None = None, dtype: str = "auto", device: str | None = None,
             merge: bool = True) -> Student:
        """Load a model (hub id or local path) and, if given, a PEFT/LoRA adapter on top: merged into the
        weights by default (sampling is then as fast as the base model's)."""
        tokenizer = load_tokenizer(model)
        lm = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
        if adapter:
            from peft import PeftModel
            lm = PeftModel.from_pretrained(lm, adapter)
            lm = lm.merge_and_unload() if merge else lm
        return cls(lm, tokenizer, device)

    # token ids of conversations -------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Ids of a whole conversation followed by the generation prompt (the template, rendered once)."""
        return self.encode(_render(self.tokenizer, messages, True))

    def extend(self, ids: list[int], messages: list[dict], teacher_message: str) -> list[int]:
        """``ids`` encode ``messages``, which end with the student's generated turn (not yet closed); return
        the ids with that turn closed, the teacher's reply and the next generation prompt appended."""
        if self.pieces is None:  # the template cannot be appended to: render it all
            return self.prompt_ids(messages + [{"role": "user", "content": teacher_message}])
        p = self.pieces
        return ids + self.encode(p.assistant_end + p.user_before + teacher_message + p.user_after)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # sampling -----------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: list[list[int]], max_new_tokens: int = 96, temperature: float = 1.0,
                 top_p: float = 1.0, batch_size: int = 64, pasts: list | None = None,
                 streams: list | None = None) -> list[tuple[list[int], bool]]:
        """Sample one completion per prompt, in batches of similar length (less padding).

        ``pasts`` (optional, one entry per prompt, ``None`` or a ``Past`` from an earlier call) carries
        each conversation's KV cache from turn to turn, so only the new tokens are run through the model;
        it is updated in place to cover each prompt plus its completion. ``streams`` (optional, one
        ``torch.Generator`` per prompt) gives each prompt its own random numbers, ``max_new_tokens``
        uniforms per call whatever it uses of them, so which numbers a conversation draws does not depend on
        what else is in the batch; without them every row draws from torch's global generator."""
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[tuple[list[int], bool]] = [([], False)] * len(prompts)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            chunk_pasts = [pasts[i] for i in chunk] if pasts is not None else [None] * len(chunk)
            chunk_streams = [streams[i] for i in chunk] if streams is not None else None
            completions, new_pasts = self._sample([prompts[i] for i in chunk], chunk_pasts, max_new_tokens,
                                                  temperature, top_p, chunk_streams)
            for i, completion, past in zip(chunk, completions, new_pasts):
                out[i] = completion
                if pasts is not None:
                    pasts[i] = past
        return out

    def _sample(self, prompts, pasts, max_new_tokens, temperature, top_p, streams=None):
        """A plain decoding loop that drops each sequence from the batch as soon as it ends (turn lengths
        are ragged: ``generate`` would keep stepping finished rows until the longest turn ends)."""
        batch = Batch.prefill(self, prompts, pasts, max_new_tokens)
        uniforms = torch.stack([torch.rand(max_new_tokens, generator=g) for g in streams]) if streams else None
        tokens: list[list[int]] = [[] for _ in prompts]
        ended = [False] * len(prompts)
        new_pasts: list[Past | None] = [None] * len(prompts)
        for step in range(max_new_tokens):
            rows = batch.rows.tolist()
            chosen = _pick(batch.logits, temperature, top_p, None if uniforms is None else uniforms[rows, step])
            for row, token in zip(rows, chosen.tolist()):
                if token == self.eos_id:
                    ended[row] = True
                else:
                    tokens[row].append(token)
            going = chosen != self.eos_id
            if step == max_new_tokens - 1 or not going.any():
                break
            if not going.all():  # finished rows leave the batch and the cache
                batch.release((~going).nonzero().squeeze(-1), new_pasts)
                keep = going.nonzero().squeeze(-1)
                batch.keep(keep)
                chosen = chosen[keep]
            batch.step(self.model, chosen)
        batch.release(torch.arange(len(batch.rows)), new_pasts)
        return list(zip(tokens, ended)), new_pasts


@dataclass
class Batch:
    """The rows being decoded together: their KV cache, allocated once for the whole turn (a growing cache
    copies itself at every step, which costs more than the tiny model's own compute once dialogues are
    long), its attention mask, each row's position, and the logits of the next token."""
    rows: torch.Tensor  # each row's index in the call's prompts
    cache: StaticCache
    mask: torch.Tensor
    last: torch.Tensor  # each row's last position
    filled: int  # cache slots written so far
    logits: torch.Tensor

    @classmethod
    def prefill(cls, student: Student, prompts, pasts, max_new_tokens) -> Batch:
        """Run each prompt's tokens that its cached past does not cover. Rows start from their past,
        left-padded to a common length; pads are masked."""
        cached = [min(p.length, len(prompt) - 1) if p is not None else 0 for p, prompt in zip(pasts, prompts)]
        fresh = [prompt[n:] for prompt, n in zip(prompts, cached)]
        width_past, width_new = max(cached), max(map(len, fresh))
        ids, new_mask = left_pad(fresh, student.pad_id, width_new)
        capacity = width_past + width_new + max_new_tokens
        mask = torch.zeros((len(prompts), capacity), dtype=torch.long)
        mask[:, width_past:width_past + width_new] = new_mask
        cache = StaticCache(config=student.model.config, max_cache_len=capacity)
        if width_past:
            for row, n in enumerate(cached):
                mask[row, width_past - n:width_past] = 1
            _load_pasts(cache, pasts, cached, width_past, student.device)
        mask = mask.to(student.device)
        position = (torch.tensor(cached)[:, None] + new_mask.cumsum(-1) - 1).clamp(min=0).to(student.device)
        logits = student.model(input_ids=ids.to(student.device), attention_mask=mask, position_ids=position,
                               past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        return cls(torch.arange(len(prompts), device=student.device), cache, mask, position[:, -1],
                   width_past + width_new, logits)

    def step(self, model, chosen: torch.Tensor) -> None:
        """Feed each row its chosen token; ``logits`` become those of the token after it."""
        self.mask[:, self.filled] = 1
        self.filled += 1
        self.last = self.last + 1
        self.logits = model(input_ids=chosen[:, None], attention_mask=self.mask, position_ids=self.last[:, None],
                            past_key_values=self.cache, use_cache=True).logits[:, -1]

    def keep(self, keep: torch.Tensor) -> None:
        """Only the rows ``keep`` (batch positions) go on."""
        self.rows, self.mask, self.last = self.rows[keep], self.mask[keep], self.last[keep]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[keep], layer.values[keep]
            layer.batch_size = len(keep)

    def release(self, batch_rows: torch.Tensor, pasts: list) -> None:
        """Save the KV cache of the rows ``batch_rows`` (batch positions), pads dropped, as their ``Past``."""
        for b in batch_rows.tolist():
            real = self.mask[b, :self.filled].bool()
            pasts[self.rows[b].item()] = Past([layer.keys[b][:, :self.filled][:, real] for layer in self.cache.layers],
                                              [layer.values[b][:, :self.filled][:, real]
                                               for layer in self.cache.layers])


def _load_pasts(cache: StaticCache, pasts, cached: list[int], width: int, device) -> None:
    """Write each row's cached keys and values into ``cache``, right-aligned to ``width`` slots."""
    first = next(p for p in pasts if p is not None)
    for layer, like in enumerate(first.keys):
        keys = like.new_zeros((len(pasts), like.shape[0], width, like.shape[-1]))
        values = torch.zeros_like(keys)
        for row, (p, n) in enumerate(zip(pasts, cached)):
            if n:
                keys[row, :, width - n:] = p.keys[layer][:, :n]
                values[row, :, width - n:] = p.values[layer][:, :n]
        cache.update(keys.to(device), values.to(device), layer)


@dataclass
class Past:
    """One conversation's KV cache: per layer, keys and values of shape (kv_heads, length, head_dim)
    for the first ``length`` tokens of its ids."""
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def length(self) -> int:
        return self.keys[0].shape[1]


def left_pad(prompts: list[list[int]], pad_id: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of ``prompts``, left-padded to ``width`` (default: the longest)."""
    width = width or max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):], mask[row, width - len(p):] = torch.tensor(p, dtype=torch.long), 1
    return ids, mask


def _pick(logits: torch.Tensor, temperature: float, top_p: float, uniform: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy at temperature 0, else a sample from the temperature-scaled, top-p-truncated distribution:
    with ``uniform`` (one number in [0, 1) per row), the inverse of each row's CDF at it."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        drop = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keep the smallest set reaching top_p
        sorted_probs[drop] = 0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    if uniform is None:
        return torch.multinomial(probs, 1).squeeze(-1)
    cdf = probs.cumsum(-1)
    u = uniform.to(cdf.device) * cdf[:, -1]  # the CDF's last value, which rounding keeps near 1
    return torch.searchsorted(cdf, u[:, None], right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)
