"""The student served by an OpenAI-compatible server (e.g. ``vllm serve <model> --enable-lora``), for
evaluation and data collection at scale (``generation.eval``, see ``load_student``): the engine keeps the
conversations as token ids exactly as with a local ``Student`` (the tokenizer is loaded locally), and each
turn is one POST ``{base_url}/completions`` per batch with the prompts as token ids, so the server never
re-renders the chat template.

A LoRA adapter is served by name: ``RemoteStudent.load(..., adapter=path)`` registers it with the server
(vLLM's ``/load_lora_adapter``, which needs ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``, and a path the server
can read) unless the server already serves that name (``--lora-modules name=path``).
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import torch

from sml import settings
from sml.dialogue import openai_api
from sml.dialogue.student import Student, load_tokenizer


def load_student(model: str, adapter: str | None, generation: settings.Generation, *, dtype: str = "float32",
                 served_name: str | None = None):
    """The student that samples dialogues outside GRPO (evaluation, offline SML and Q-priming data
    collection), where ``generation.eval`` says: in-process (``local``: the adapter merged into the weights)
    or served by an OpenAI-compatible server at ``generation.eval_base_url`` such as ``vllm serve <model>
    --enable-lora`` (``openai``: the adapter by name, ``served_name`` or one made from its path, registered
    with the server if needed)."""
    if generation.eval == "openai":
        return RemoteStudent.load(model, adapter or None, base_url=generation.eval_base_url,
                                  api_key_env=generation.eval_api_key_env, served_name=served_name)
    return Student.load(model, adapter=adapter or None, dtype=dtype)


class RemoteStudent(Student):
    """``Student``'s interface (token ids in, token ids out) over HTTP. Sampling seeds come from torch's
    generator, which the engine seeds, so a run against a deterministic server is reproducible."""

    def __init__(self, tokenizer, base_url: str, served_model: str, *, api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = 120, max_retries: int = 3, workers: int = 4, max_length: int = 32768):
        self.model, self.device = None, "remote"
        self.use_tokenizer(tokenizer)
        self.base_url, self.served_model = base_url.rstrip("/"), served_model
        self.http = dict(api_key_env=api_key_env, timeout_s=timeout_s, max_retries=max_retries)
        self.workers, self.max_length = workers, max_length

    @classmethod
    def load(cls, model: str, adapter: str | None = None, *, base_url: str, served_name: str | None = None,
             **kwargs) -> RemoteStudent:
        """The student ``model`` (its tokenizer is read locally) as served at ``base_url``; with an adapter,
        the adapter under ``served_name`` (default: a name made from its path), registered if needed."""
        name = served_name or (adapter_name(adapter) if adapter else model)
        student = cls(load_tokenizer(model), base_url, name, **kwargs)
        if adapter and name not in student.served_models():
            student.load_adapter(name, adapter)
        return student

    def served_models(self) -> list[str]:
        """The model names the server lists at ``GET /models`` (base models and loaded adapters)."""
        return openai_api.call(f"{self.base_url}/models", None, _model_ids, what=f"student endpoint {self.base_url}",
                               **self.http)

    def load_adapter(self, name: str, path: str) -> None:
        openai_api.call(f"{self.base_url}/load_lora_adapter", {"lora_name": name, "lora_path": str(path)},
                        lambda raw: raw, what=f"student endpoint {self.base_url}", **self.http)

    @torch.no_grad()
    def generate(self, prompts, max_new_tokens=96, temperature=1.0, top_p=1.0, batch_size=64, streams=None):
        """One completion per prompt (token ids), ``batch_size`` prompts per request, a few requests in
        flight (the server keeps its own prefix cache); ``streams`` are ignored: a request carries one seed
        for all its prompts."""
        batches = [range(i, min(i + batch_size, len(prompts))) for i in range(0, len(prompts), batch_size)]
        # one seed per request: the server applies it to every prompt of the request (the engine sends each
        # dialogue once per turn, so no two prompts of a request are the same conversation)
        seeds = torch.randint(0, 2**31 - 1, (len(batches),)).tolist()
        body = lambda rows: {"model": self.served_model, "prompt": [prompts[i] for i in rows],
                             "max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
                             "seed": seeds[rows[0] // batch_size], "return_token_ids": True,
                             "skip_special_tokens": False}
        with ThreadPoolExecutor(max(1, min(self.workers, len(batches)))) as pool:
            replies = pool.map(lambda rows: openai_api.call(f"{self.base_url}/completions", body(rows),
                                                            lambda raw: self._completions(raw, len(rows)),
                                                            what=f"student endpoint {self.base_url}", **self.http),
                               batches)
            return [c for batch in replies for c in batch]

    def _completions(self, raw: bytes, n: int) -> list[tuple[list[int], bool]]:
        """``(token ids without the end-of-turn token, ended on its own)`` per choice, in prompt order."""
        try:
            choices = sorted(json.loads(raw)["choices"], key=lambda c: c["index"])
            out = []
            for c in choices:
                ids = c.get("token_ids")
                ids = list(ids) if ids is not None else self.encode(c["text"])  # servers without token ids
                ended = c.get("finish_reason") == "stop" or (bool(ids) and ids[-1] == self.eos_id)
                out.append(([t for t in ids if t != self.eos_id], ended))
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a completions reply ({type(e).__name__}: {e})") from e
        if len(out) != n:
            raise ValueError(f"{len(out)} choices for {n} prompts")
        return out


def _model_ids(raw: bytes) -> list[str]:
    try:
        return [m["id"] for m in json.loads(raw)["data"]]
    except (KeyError, TypeError) as e:
        raise ValueError(f"not a model list ({type(e).__name__}: {e})") from e


def adapter_name(path) -> str:
    """A served name for an adapter folder: ``models/sml_online/math_s0`` -> ``sml_online-math_s0``."""
    parts = [p for p in re.split(r"[\\/]+", str(path)) if p not in ("", ".", "models")]
    return "-".join(parts[-2:])
