"""The student: any Hugging Face causal LM (hub id or local path), optionally with a LoRA adapter,
sampled in batches (``sml.dialogue.decoding``).

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
from transformers import AutoModelForCausalLM, AutoTokenizer, TokenizersBackend

from sml.dialogue.decoding import Decoder, Rounds


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
    end-of-turn token, which is not included) and whether it ended on its own. ``attention``: how its
    ``Decoder`` runs attention (``sml.dialogue.decoding.ATTENTION``).
    """
    attention = "dense"

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
    def decoder(self, slots: int, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                reuse: bool = True) -> Decoder | Rounds:
        """Where the student's turns are sampled: a ``Decoder`` (continuous batching in ``slots`` rows, each
        conversation keeping its KV cache between turns), or for students with a ``generate`` of their own
        (they sample elsewhere: a server, vLLM, a script) ``Rounds`` of ``generate`` calls."""
        if type(self).generate is not Student.generate:
            return Rounds(self, max_new_tokens, dict(temperature=temperature, top_p=top_p, batch_size=slots))
        return Decoder(self.model, self.eos_id, self.pad_id, slots, max_new_tokens, temperature, top_p, reuse,
                       self.attention)

    def generate(self, prompts: list[list[int]], max_new_tokens: int = 96, temperature: float = 1.0,
                 top_p: float = 1.0, batch_size: int = 64, streams: list | None = None) -> list[tuple[list[int], bool]]:
        """Sample one completion per prompt, ``batch_size`` at a time (shortest first: less attention to
        padding). ``streams`` (optional, one ``torch.Generator`` per prompt) gives each prompt its own random
        numbers (see ``Decoder``); without them every prompt draws from torch's global generator."""
        decoder = Decoder(self.model, self.eos_id, self.pad_id, min(batch_size, len(prompts)), max_new_tokens,
                          temperature, top_p, attention=self.attention)
        for i in sorted(range(len(prompts)), key=lambda i: len(prompts[i])):
            decoder.add(i, prompts[i], streams[i] if streams is not None else None)
        out: list[tuple[list[int], bool]] = [([], False)] * len(prompts)
        while decoder.busy:
            for i, tokens, ended in decoder.step():
                out[i] = (tokens, ended)
                decoder.release(i)
        return out


def left_pad(prompts: list[list[int]], pad_id: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of ``prompts``, left-padded to ``width`` (default: the longest)."""
    width = width or max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):], mask[row, width - len(p):] = torch.tensor(p, dtype=torch.long), 1
    return ids, mask
