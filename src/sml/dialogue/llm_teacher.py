"""LLM teachers behind the same ``Teacher`` interface: a local Hugging Face chat model (``HFTeacher``)
or any OpenAI-compatible endpoint such as vLLM, SGLang or TGI (``OpenAITeacher``).

Both get the same prompt (``build_messages``): the task, the teacher's private knowledge, the
environment's judgement of the student's last turn, the shard to reveal, and a firm rule never to
give the answer away. Replies are cached on disk, keyed by everything that determines them, because
simulated teachers cost money and drift: a rerun with the same inputs makes no model or HTTP calls.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sml import settings
from sml.dialogue import openai_api
from sml.tasks.schema import prompt_for
from sml.dialogue.environment import TeacherView
from sml.dialogue.teacher import ScriptedTeacher, Teacher, private_knowledge


ROLE = ("You are a patient teacher. A student is solving the task below in a dialogue with you. You know "
        "things the student does not; use them to guide the student to solve the task on their own.")
RULE = ("Never reveal the final answer or the reference solution, not even in part or in other words: the "
        "student must work it out. Reply in 2-3 short sentences.")
JUDGEMENT = {
    "attempt": "The student's last message is an answer attempt, and it is wrong.",
    "question": "The student's last message asks you a question: answer it from what you know.",
    "other": "The student's last message neither answers nor asks anything: ask them for an attempt.",
}
# In the dialogue the teacher speaks as "user" and the student as "assistant"; the LLM plays the teacher.
FLIP = {"user": "assistant", "assistant": "user"}


def build_messages(view: TeacherView) -> list[dict]:
    """The chat an LLM teacher completes: a system message with everything it knows, then the public
    dialogue with roles flipped so that the student speaks as ``user``."""
    judgement = JUDGEMENT[view.label]
    extracted = (view.check or {}).get("extracted")
    if view.label == "attempt" and extracted:
        judgement += f" The student's answer was {extracted}."
    system = [ROLE, "The task, as the student was given it:\n" + prompt_for(view.task, view.variant),
              "What only you know:\n" + private_knowledge(view), judgement]
    if view.reveal is not None:
        system.append(f'In this reply, give the student this information word for word: "{view.reveal}"')
    system.append(RULE)
    return [{"role": "system", "content": "\n\n".join(system)},
            *({"role": FLIP[m["role"]], "content": m["content"]} for m in view.messages)]


class LLMTeacher(Teacher):
    """What both backends share: prompting, the reply cache and its hit/miss counters.
    Subclasses implement ``_generate(prompts) -> replies`` for the prompts not in the cache."""

    backend = ""

    def __init__(self, model: str, max_new_tokens: int, temperature: float, cache_dir: str | Path | None):
        self.model_name = str(model)
        self.params = {"max_new_tokens": max_new_tokens, "temperature": temperature}
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.hits = self.misses = 0

    def reply(self, view: TeacherView) -> str:
        return self.reply_batch([view])[0]

    def reply_batch(self, views: list[TeacherView]) -> list[str]:
        return self.complete([build_messages(v) for v in views])

    def complete(self, prompts: list[list[dict]]) -> list[str]:
        """Chat completions for any prompts, through the disk cache (also used by ``sml.evaluation.strategies``)."""
        keys = [self._key(p) for p in prompts]
        replies = [self._load(k) for k in keys]
        todo = [i for i, r in enumerate(replies) if r is None]
        self.hits += len(prompts) - len(todo)
        self.misses += len(todo)
        if todo:
            for i, text in zip(todo, self._generate([prompts[i] for i in todo])):
                replies[i] = text
                self._store(keys[i], text)
        return replies

    def _generate(self, prompts: list[list[dict]]) -> list[str]:
        raise NotImplementedError

    # cache: one JSON file per reply ------------------------------------------------------------
    def _key(self, messages: list[dict]) -> str:
        blob = json.dumps([self.backend, self.model_name, messages, self.params], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _load(self, key: str) -> str | None:
        if self.cache_dir is None or not (path := self.cache_dir / f"{key}.json").exists():
            return None
        return json.loads(path.read_text())["reply"]

    def _store(self, key: str, reply: str) -> None:
        if self.cache_dir is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_dir / f"{key}.{os.getpid()}.tmp"  # write then rename: parallel runs never see half a file
        tmp.write_text(json.dumps({"reply": reply}))
        tmp.replace(self.cache_dir / f"{key}.json")


class HFTeacher(LLMTeacher):
    """A local Hugging Face chat model (hub id or local path), one left-padded ``generate`` per batch."""

    backend = "hf"

    def __init__(self, model: str, *, max_new_tokens: int = 96, temperature: float = 0.0, batch_size: int = 16,
                 cache_dir: str | Path | None = None, device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM

        from sml.dialogue.student import load_tokenizer

        super().__init__(model, max_new_tokens, temperature, cache_dir)
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = load_tokenizer(model, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype="auto").to(self.device).eval()

    def _generate(self, prompts: list[list[dict]]) -> list[str]:
        import torch

        temperature = self.params["temperature"]
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        replies = []
        for start in range(0, len(prompts), self.batch_size):
            texts = [self.tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                     for p in prompts[start:start + self.batch_size]]
            # The chat template already writes any BOS token, so the tokenizer must not add another.
            batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            with torch.no_grad():
                out = self.model.generate(**batch, max_new_tokens=self.params["max_new_tokens"],
                                          pad_token_id=self.tokenizer.pad_token_id, **sampling)
            new = out[:, batch["input_ids"].shape[1]:]
            replies += [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return replies


class OpenAITeacher(LLMTeacher):
    """Any OpenAI-compatible endpoint: POST ``{base_url}/chat/completions`` (stdlib HTTP, no SDK), a few
    requests in flight at once, with ``openai_api.call``'s timeout and retries. Replies already received
    stay in the cache, so a rerun does not ask for them again."""

    backend = "openai"

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60,
                 max_retries: int = 3, max_new_tokens: int = 96, temperature: float = 0.0,
                 cache_dir: str | Path | None = None, workers: int = 8):
        super().__init__(model, max_new_tokens, temperature, cache_dir)
        self.base_url = base_url.rstrip("/")
        self.api_key_env, self.timeout_s, self.max_retries, self.workers = api_key_env, timeout_s, max_retries, workers

    def _generate(self, prompts: list[list[dict]]) -> list[str]:
        with ThreadPoolExecutor(min(self.workers, len(prompts))) as pool:
            return list(pool.map(self._complete, prompts))

    def _complete(self, messages: list[dict]) -> str:
        body = {"model": self.model_name, "messages": messages, "max_tokens": self.params["max_new_tokens"],
                "temperature": self.params["temperature"]}
        return openai_api.call(f"{self.base_url}/chat/completions", body, _content,
                               what=f"teacher endpoint {self.base_url}", api_key_env=self.api_key_env,
                               timeout_s=self.timeout_s, max_retries=self.max_retries)


def _content(raw: bytes) -> str:
    """The message text of a chat completion response body; ValueError when it is not one."""
    try:
        reply = json.loads(raw)["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise ValueError(f"no choices[0].message.content ({type(e).__name__}: {e})") from e
    if reply is not None and not isinstance(reply, str):
        raise ValueError(f"message content is a {type(reply).__name__}, not text")
    return (reply or "").strip()


def make_teacher(teacher: settings.Teacher, out_root: str | Path = ".") -> Teacher:
    """The teacher that ``teacher`` (params.yaml's section) names; an LLM teacher caches its replies in
    ``teacher.cache_dir`` under ``out_root``."""
    if teacher.kind == "scripted":
        return ScriptedTeacher(feedback=teacher.feedback, reveal_answer=teacher.reveal_answer,
                               restate=teacher.restate)
    cache_dir = Path(out_root) / teacher.cache_dir if teacher.cache_dir else None
    if teacher.kind == "hf":
        return HFTeacher(teacher.model, cache_dir=cache_dir)
    return OpenAITeacher(teacher.base_url, teacher.model, api_key_env=teacher.api_key_env, cache_dir=cache_dir)
