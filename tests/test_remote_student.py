"""The remote student (evaluation through an OpenAI-compatible server serving a LoRA adapter) against a
real HTTP server on a free local port. The server speaks vLLM's API (``/v1/models``, ``/v1/completions``
with token-id prompts and ``return_token_ids``, ``/v1/load_lora_adapter``) and samples with our local
``Student``, so greedy dialogues through it must equal the same dialogues run in-process."""

import json

import pytest
import torch

from local_server import JSONHandler, serve
from sml.evaluation import evaluate
from sml.dialogue import openai_api
from sml.train import sft
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
    peft = sft.add_adapter(model, r=4, alpha=8, seed=0)
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
    common = dict(max_turns=3, temperature=0.0, max_new_tokens=12, batch_size=4, progress=False, reuse_cache=False)
    remote = RemoteStudent.load(str(checkpoint / "base"), str(adapter), base_url=server)
    assert remote.served_model == "sml_online-math_s0"
    assert VLLMLike.requests[0] == ("/v1/load_lora_adapter", {"lora_name": "sml_online-math_s0", "lora_path": str(adapter)})
    through_server = run_dialogues(tasks, remote, ScriptedTeacher(), **common)
    local = run_dialogues(tasks, Student.load(str(checkpoint / "base"), str(adapter), dtype="float32", device="cpu"),
                          ScriptedTeacher(), **common)
    base = run_dialogues(tasks, Student.load(str(checkpoint / "base"), dtype="float32", device="cpu"), ScriptedTeacher(),
                         **common)
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
    _, rows, behaviour = evaluate.evaluate(remote, ScriptedTeacher(), toy_math.generate(4, 5), condition="base",
                                           train_domain="math", variant="full", seed=0, max_turns=2,
                                           max_new_tokens=8, progress=False)
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


def test_adapter_names_and_missing_url():
    assert adapter_name("models/sml_online/math_s0") == "sml_online-math_s0"
    assert adapter_name("/abs/out/models/st_rl/code_s2/") == "st_rl-code_s2"
    with pytest.raises(ValueError, match="generation.eval_base_url: required"):
        RemoteStudent.load("models/base_student", base_url="")
