"""The remote student (evaluation and data collection through an OpenAI-compatible server serving a LoRA
adapter) against a real HTTP server on a free local port. The server speaks vLLM's API (``/v1/models``, ``/v1/completions``
with token-id prompts and ``return_token_ids``, ``/v1/load_lora_adapter``) and samples with our local
``Student``, so greedy dialogues through it must equal the same dialogues run in-process."""

import json

import pytest
import sections
import torch

from local_server import JSONHandler, serve
from sml import resume
from sml.evaluation import evaluate
from sml.dialogue import openai_api
from sml.train import sft
from sml.train.qprime import Injection
from sml.dialogue.engine import run_dialogues
from sml.dialogue.remote_student import RemoteStudent, adapter_name
from sml.dialogue.student import Student
from sml.tasks import toy_math
from sml.dialogue.teacher import ScriptedTeacher
from tiny_models import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny base model and a LoRA adapter that changes its replies, saved like any HF checkpoint."""
    root = tmp_path_factory.mktemp("remote")
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer)
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    peft = sft.add_adapter(model, sections.finetune(lora_r=4, lora_alpha=8), seed=0)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # B starts at zero (the adapter would be a no-op)
    peft.save_pretrained(root / "models" / "sml_online" / "math_s0")
    return root


class VLLMLike(JSONHandler):
    """Serves ``students`` ({name: Student}) the way ``vllm serve --enable-lora`` does; records requests."""
    students, requests, base = {}, [], None

    def do_GET(self):
        if self.path == "/v1/models":
            return self.send(200, json.dumps({"data": [{"id": n} for n in self.students]}).encode())
        self.send(404, b'{"error": "not found"}')

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append((self.path, body))
        if self.path == "/v1/load_lora_adapter":
            self.students[body["lora_name"]] = Student.load(self.base, body["lora_path"], dtype="float32", device="cpu")
            return self.send(200, b"Success")
        if body.get("model") not in self.students:
            return self.send(404, json.dumps({"error": f"model {body.get('model')!r} does not exist"}).encode())
        student = self.students[body["model"]]
        out = student.generate(body["prompt"], body["max_tokens"], body["temperature"], body["top_p"],
                               batch_size=len(body["prompt"]))
        choices = [{"index": i, "text": student.decode(ids), "finish_reason": "stop" if ended else "length",
                    "token_ids": ids + ([student.eos_id] if ended else [])} for i, (ids, ended) in enumerate(out)]
        self.send(200, json.dumps({"choices": choices}).encode())


@pytest.fixture
def server(checkpoint):
    VLLMLike.base = str(checkpoint / "base")
    VLLMLike.students = {VLLMLike.base: Student.load(VLLMLike.base, dtype="float32", device="cpu")}
    VLLMLike.requests = []
    server, url = serve(VLLMLike)
    yield url
    server.shutdown()


def dialogues_as_data(dialogues):
    return [(d.messages, d.labels, d.correct, d.solved_turn) for d in dialogues]


def test_greedy_dialogues_through_the_server_equal_the_local_adapter(checkpoint, server):
    adapter = checkpoint / "models" / "sml_online" / "math_s0"
    tasks = toy_math.generate(6, 3)
    common = dict(max_turns=3, progress=False, reuse_cache=False)
    dialogue = sections.dialogue(temperature=0.0, max_new_tokens=12, batch_size=4)
    remote = RemoteStudent.load(str(checkpoint / "base"), str(adapter), base_url=server)
    assert remote.served_model == "sml_online-math_s0"
    assert VLLMLike.requests[0] == ("/v1/load_lora_adapter", {"lora_name": "sml_online-math_s0", "lora_path": str(adapter)})
    through_server = run_dialogues(tasks, remote, ScriptedTeacher(), dialogue, **common)
    local = run_dialogues(tasks, Student.load(str(checkpoint / "base"), str(adapter), dtype="float32", device="cpu"),
                          ScriptedTeacher(), dialogue, **common)
    base = run_dialogues(tasks, Student.load(str(checkpoint / "base"), dtype="float32", device="cpu"), ScriptedTeacher(),
                         dialogue, **common)
    assert dialogues_as_data(through_server) == dialogues_as_data(local)
    assert [d.student_ids for d in through_server] == [d.student_ids for d in local]
    assert dialogues_as_data(through_server) != dialogues_as_data(base)  # the adapter, not the base, answered
    completions = [body for path, body in VLLMLike.requests if path == "/v1/completions"]
    assert all(body["model"] == "sml_online-math_s0" and len(body["prompt"]) <= 4 for body in completions)
    assert all(isinstance(body["prompt"][0][0], int) for body in completions)  # token ids, not re-rendered text
    # a second load finds the adapter already served and registers nothing
    RemoteStudent.load(str(checkpoint / "base"), str(adapter), base_url=server)
    assert sum(path == "/v1/load_lora_adapter" for path, _ in VLLMLike.requests) == 1


def test_evaluation_cell_through_the_server(checkpoint, server):
    remote = RemoteStudent.load(str(checkpoint / "base"), base_url=server)
    _, rows, behaviour = evaluate.evaluate(remote, ScriptedTeacher(), toy_math.generate(4, 5),
                                           sections.dialogue(eval_turns=2, max_new_tokens=8), condition="base",
                                           train_domain="math", variant="full", seed=0, progress=False)
    assert list(rows["turn"]) == [1, 2] and rows["success"].between(0, 1).all()
    assert behaviour["condition"] == "base"


def test_sampling_seeds_make_remote_runs_reproducible(checkpoint, server):
    remote = RemoteStudent.load(str(checkpoint / "base"), base_url=server)
    prompt = remote.prompt_ids([{"role": "user", "content": "1 + 2 = ?"}])
    torch.manual_seed(0)
    remote.generate([prompt, prompt], max_new_tokens=4, temperature=1.0)
    torch.manual_seed(0)
    remote.generate([prompt, prompt], max_new_tokens=4, temperature=1.0)
    first, second = [body for path, body in VLLMLike.requests if path == "/v1/completions"]
    assert first["seed"] == second["seed"]


def test_unknown_model_fails_clearly(checkpoint, server):
    remote = RemoteStudent(Student.load(str(checkpoint / "base")).tokenizer, server, "no-such-adapter", max_retries=0)
    with pytest.raises(RuntimeError, match=r"student endpoint http://127\.0\.0\.1:\d+/v1 rejected the request: HTTP 404"):
        remote.generate([[1, 2, 3]], max_new_tokens=2)


def test_malformed_reply_is_retried_then_named(monkeypatch):
    class Broken(JSONHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send(200, b'{"choices": [{"index": 0}]}')  # no text, no token ids

    monkeypatch.setattr(openai_api.time, "sleep", lambda s: None)
    server, url = serve(Broken)
    try:
        remote = RemoteStudent(tiny_tokenizer(), url, "m", max_retries=1)
        with pytest.raises(RuntimeError, match=r"failed after 2 attempts.*malformed reply \(not a completions reply"):
            remote.generate([[1, 2]], max_new_tokens=2)
    finally:
        server.shutdown()


def test_adapter_names():
    assert adapter_name("models/sml_online/math_s0") == "sml_online-math_s0"
    assert adapter_name("/abs/out/models/st_rl/code_s2/") == "st_rl-code_s2"


# ---- data collection (offline SML, Q-priming): generation.eval reaches the rollouts too ----

COLLECT = dict(max_turns=3, samples_per_task=2, progress=False)
COLLECT_DIALOGUE = sections.dialogue(temperature=0.0, max_new_tokens=12, batch_size=4, gamma=0.7)
LOCAL = sections.generation()


def served(url):
    return sections.generation(eval="openai", eval_base_url=url)


def collecting_model(checkpoint):
    """The training model of a collection stage: the student as loaded, with a fresh LoRA adapter."""
    base = Student.load(str(checkpoint / "base"), dtype="float32", device="cpu")
    return sft.add_adapter(base.model, sections.finetune(lora_r=4, lora_alpha=8), seed=0), base.tokenizer


def collect(student, tasks, **extra):
    return resume.dialogues(tasks, student, ScriptedTeacher(), COLLECT_DIALOGUE, seed=1000, **COLLECT, **extra)


def test_collection_with_a_fresh_adapter_samples_the_served_base(checkpoint, server, tmp_path):
    """Round 1 of offline SML and the Q-priming data: the adapter changes nothing yet, so the server's base
    model samples (no adapter is saved or registered), exactly as in-process collection does."""
    model, tokenizer = collecting_model(checkpoint)
    tasks = toy_math.generate(4, 11)
    remote = sft.rollout_student(model, tokenizer, str(checkpoint / "base"), served(server),
                                 adapter_dir=tmp_path / "round1")
    assert remote.served_model == str(checkpoint / "base") and not (tmp_path / "round1").exists()
    local = sft.rollout_student(model, tokenizer, str(checkpoint / "base"), LOCAL)
    assert collect(remote, tasks)["messages"] == collect(local, tasks)["messages"]
    assert [path for path, _ in VLLMLike.requests if path != "/v1/completions"] == []
    # Q-priming: the student's own questions go through the server too
    through_server, in_process = Injection(decay=0.75, source="model"), Injection(decay=0.75, source="model")
    asked = collect(remote, tasks, inject=through_server)
    assert asked["messages"] == collect(local, tasks, inject=in_process)["messages"]
    assert through_server.counts == in_process.counts and through_server.counts["injected"] > 0


def test_later_rounds_sample_the_adapter_just_trained_through_the_server(checkpoint, server, tmp_path):
    """Offline SML round 2 on: the trained adapter is saved under the stage's work folder, registered with the
    server by name, and sampled there, exactly as the in-process merged copy samples."""
    model, tokenizer = collecting_model(checkpoint)
    with torch.no_grad():  # stands for a round of training: B leaves zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    assert sft.trained(model)
    tasks = toy_math.generate(4, 12)
    adapter_dir = tmp_path / "work" / "sml_offline-math_s0-round2"
    remote = sft.rollout_student(model, tokenizer, str(checkpoint / "base"), served(server), adapter_dir=adapter_dir)
    assert (adapter_dir / "adapter_config.json").exists()
    assert remote.served_model == "work-sml_offline-math_s0-round2"
    assert ("/v1/load_lora_adapter", {"lora_name": "work-sml_offline-math_s0-round2",
                                      "lora_path": str(adapter_dir.resolve())}) in VLLMLike.requests
    local = sft.rollout_student(model, tokenizer, str(checkpoint / "base"), LOCAL)
    fresh = sft.add_adapter(Student.load(str(checkpoint / "base"), dtype="float32").model, sections.finetune(), seed=0)
    base = sft.rollout_student(fresh, tokenizer, str(checkpoint / "base"), LOCAL)
    through_server = collect(remote, tasks)
    assert through_server["messages"] == collect(local, tasks)["messages"]
    assert through_server["messages"] != collect(base, tasks)["messages"]  # the adapter, not the base, answered
    assert {body["model"] for path, body in VLLMLike.requests if path == "/v1/completions"} == \
        {"work-sml_offline-math_s0-round2"}


class NoRuntimeLoRA(VLLMLike):
    """``vllm serve`` without VLLM_ALLOW_RUNTIME_LORA_UPDATING: no /load_lora_adapter route."""

    def do_POST(self):
        if self.path == "/v1/load_lora_adapter":
            self.rfile.read(int(self.headers["Content-Length"]))
            return self.send(404, b'{"detail": "Not Found"}')
        return super().do_POST()


def test_a_server_that_cannot_load_the_trained_adapter_is_named_with_the_settings(checkpoint, tmp_path):
    NoRuntimeLoRA.base = str(checkpoint / "base")
    NoRuntimeLoRA.students = {NoRuntimeLoRA.base: Student.load(NoRuntimeLoRA.base, dtype="float32", device="cpu")}
    server, url = serve(NoRuntimeLoRA)
    try:
        model, tokenizer = collecting_model(checkpoint)
        with torch.no_grad():
            next(p for n, p in model.named_parameters() if "lora_B" in n).fill_(0.1)
        with pytest.raises(RuntimeError, match=r"generation.eval 'openai' with offline_sml.rounds > 1: .*HTTP 404.*"
                                               r"VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
            sft.rollout_student(model, tokenizer, NoRuntimeLoRA.base, served(url), adapter_dir=tmp_path / "round2")
        with pytest.raises(ValueError, match="pass an adapter_dir"):
            sft.rollout_student(model, tokenizer, NoRuntimeLoRA.base, served(url))
    finally:
        server.shutdown()
