"""LLM teachers: the prompt, the HF backend, the OpenAI-compatible backend against a real local server
(`transformers serve` on a tiny model), the reply cache, retries/timeouts and the factory."""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import sections
import torch

from sml.train.base_model import build_model, train_tokenizer
from sml.dialogue.llm_teacher import RULE, HFTeacher, OpenAITeacher, build_messages, make_teacher
from sml.tasks import toy_code, toy_math
from sml.dialogue.environment import TeacherView
from sml.dialogue.teacher import ScriptedTeacher, private_knowledge
from sml.verify import verify


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random chat model saved like any HF checkpoint. Its projections get a large init so that
    greedy replies depend on the prompt (at the default init a 1-layer tied model just echoes "\\n")."""
    tasks = toy_math.generate(200, 0)
    tok = train_tokenizer([t["prompt"] for t in tasks] + [t["solution"] for t in tasks], vocab_size=400)
    model = build_model(tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "proj" in name:
                weight.normal_(0, 1.0)
    path = tmp_path_factory.mktemp("tiny_teacher")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture
def views():
    views = []
    for i, task in enumerate(toy_math.generate(3, 0)):
        messages = [{"role": "user", "content": task["prompt"]}, {"role": "assistant", "content": f"The answer is {i + 3}."}]
        views.append(TeacherView(task=task, variant="full", messages=messages, label="attempt",
                                 check={"extracted": str(i + 3), "passed": False}, turn=1))
    return views


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(model_dir, tmp_path):
    """`transformers serve` on the tiny model, offline, on a free port; yields (base_url, process)."""
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "transformers.cli.transformers", "serve", model_dir,
         "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("transformers serve did not start:\n" + (tmp_path / "serve.log").read_text()[-3000:])
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}/v1", proc
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def test_prompt_gives_private_knowledge_forbids_the_answer_and_flips_roles(views):
    view = views[0]
    messages = build_messages(view)
    system = messages[0]["content"]
    assert messages[0]["role"] == "system"
    assert private_knowledge(view) in system and view.task["answer"] in system
    assert RULE in system and "Never reveal the final answer" in system
    assert "answer attempt" in system and "The student's answer was 3." in system
    # the teacher's opening becomes the LLM's own ("assistant") turn, the student's attempt the "user" turn
    assert messages[1:] == [{"role": "assistant", "content": view.task["prompt"]},
                            {"role": "user", "content": "The answer is 3."}]


def test_prompt_reveals_the_shard_and_reports_tests():
    task = toy_code.generate(1, 0)[0]
    attempt = "```python\ndef f(s):\n    return s.upper()\n```"
    view = TeacherView(task=task, variant="sharded", label="attempt", check=verify(task, attempt), reveal=task["shards"][1],
                       messages=[{"role": "user", "content": task["shards"][0]}, {"role": "assistant", "content": attempt}])
    system = build_messages(view)[0]["content"]
    assert task["shards"][1] in system  # verbatim
    assert "FAIL assert f(" in system and task["prompt"] in system  # hidden test results, the full problem
    assert task["solution"].strip() in system and RULE in system


def test_hf_teacher_batches_and_caches(model_dir, views, tmp_path):
    teacher = HFTeacher(model_dir, max_new_tokens=8, batch_size=2, cache_dir=tmp_path / "cache")
    calls = []
    generate = teacher.model.generate
    teacher.model.generate = lambda **kw: calls.append(kw["input_ids"].shape[0]) or generate(**kw)

    replies = teacher.reply_batch(views)
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies)
    assert len(set(replies)) > 1  # replies depend on the prompt
    assert calls == [2, 1]  # one left-padded generate per chunk of batch_size
    assert (teacher.hits, teacher.misses) == (0, 3)
    # padding does not change a reply: batched == one at a time (no cache)
    single = HFTeacher(model_dir, max_new_tokens=8)
    assert [single.reply(v) for v in views] == replies

    assert teacher.reply_batch(views) == replies
    assert calls == [2, 1] and (teacher.hits, teacher.misses) == (3, 3)
    # a fresh teacher (a rerun) with the same inputs is served from disk too
    rerun = HFTeacher(model_dir, max_new_tokens=8, cache_dir=tmp_path / "cache")
    assert rerun.reply_batch(views) == replies and (rerun.hits, rerun.misses) == (3, 0)
    # other sampling params are another key
    other = HFTeacher(model_dir, max_new_tokens=4, cache_dir=tmp_path / "cache")
    other.reply_batch(views[:1])
    assert other.misses == 1


def test_openai_teacher_against_a_real_server_then_from_cache(server, model_dir, views, tmp_path):
    base_url, proc = server
    teacher = OpenAITeacher(base_url, model_dir, max_new_tokens=8, cache_dir=tmp_path / "cache")
    replies = teacher.reply_batch(views)
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies)
    assert (teacher.hits, teacher.misses) == (0, 3)
    # the server saw exactly our prompt: greedy replies match the same model run locally
    assert replies == HFTeacher(model_dir, max_new_tokens=8).reply_batch(views)

    proc.terminate()
    proc.wait(timeout=10)
    rerun = OpenAITeacher(base_url, model_dir, max_new_tokens=8, cache_dir=tmp_path / "cache",
                          timeout_s=1, max_retries=0)
    assert rerun.reply_batch(views) == replies  # the server is gone: zero HTTP requests
    assert (rerun.hits, rerun.misses) == (3, 0)


@pytest.mark.parametrize("silent", [False, True], ids=["closed_port", "silent_server"])
def test_unreachable_endpoint_fails_clearly_instead_of_hanging(views, silent):
    with socket.socket() as listener:
        if silent:  # accepts connections (backlog) but never answers
            listener.bind(("127.0.0.1", 0))
            listener.listen(4)
        base_url = f"http://127.0.0.1:{listener.getsockname()[1] if silent else free_port()}/v1"
        teacher = OpenAITeacher(base_url, "m", timeout_s=0.5, max_retries=1)
        start = time.monotonic()
        with pytest.raises(RuntimeError, match=re.escape(base_url) + (".*timed out" if silent else ".*after 2 attempts")):
            teacher.reply_batch(views[:1])
        assert time.monotonic() - start < 30  # bounded by timeout x attempts + backoff: it does not hang


def test_make_teacher(model_dir, tmp_path):
    scripted = make_teacher(sections.teacher(feedback="verdict,step", reveal_answer=True))
    assert isinstance(scripted, ScriptedTeacher) and scripted.feedback == ["verdict", "step"] and scripted.reveal_answer
    endpoint = make_teacher(sections.teacher(kind="openai", model="m", base_url="http://localhost:8000/v1/",
                                             cache_dir="data/teacher_cache"), tmp_path)
    assert isinstance(endpoint, OpenAITeacher) and endpoint.base_url == "http://localhost:8000/v1"
    assert endpoint.cache_dir == tmp_path / "data" / "teacher_cache"  # under out_root
    assert (endpoint.max_retries, endpoint.params) == (3, {"max_new_tokens": 96, "temperature": 0.0})
    local = make_teacher(sections.teacher(kind="hf", model=model_dir))
    assert isinstance(local, HFTeacher) and local.cache_dir is None
