"""Teacher faults: an OpenAI-compatible endpoint that errors, times out, drops connections or answers
garbage is retried with backoff and then fails with a clear error; dialogues already finished are kept,
and a rerun once the endpoint is back resumes to exactly the result of an undisturbed run."""

import json
import re
import threading

import pytest
import sections

from sml.dialogue import openai_api
from sml import resume
from sml.dialogue.llm_teacher import OpenAITeacher
from sml.dialogue.student import Student
from sml.tasks import toy_math
from sml.dialogue.environment import TeacherView
from local_server import JSONHandler, serve
from tiny_models import tiny_model, tiny_tokenizer

OK = "ok"


class Endpoint:
    """A real HTTP server on a free local port speaking just enough of ``/v1/chat/completions``.
    ``plan`` is what the next requests get, one action each (then ``then`` for every later one):
    ok | 500 | 503 | 429 | 400 | garbage | html | no_choices | drop | hang. An ``ok`` reply is a fixed
    function of the request, as a deterministic teacher's would be."""

    def __init__(self, plan=(), then=OK):
        self.plan, self.then, self.requests = list(plan), then, []
        self.release = threading.Event()  # set to free hanging handlers at teardown
        endpoint = self

        class Handler(JSONHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append(body)
                action = endpoint.plan.pop(0) if endpoint.plan else endpoint.then
                if action == "hang":
                    endpoint.release.wait(10)
                    return
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if action in ("500", "503", "429", "400"):
                    return self.send(int(action), b'{"error": "simulated"}')
                payload = {"garbage": b"\x00\xffnot json", "html": b"<html>502 Bad Gateway</html>",
                           "no_choices": b'{"choices": []}'}.get(action)
                if payload is None:
                    turns = sum(m["role"] == "user" for m in body["messages"])
                    text = f"Not yet: look again at step {turns}."
                    payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                self.send(200, payload)

        self.server, self.url = serve(Handler)

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    made = []

    def make(plan=(), then=OK):
        made.append(Endpoint(plan, then))
        return made[-1]

    yield make
    for e in made:
        e.close()


@pytest.fixture
def sleeps(monkeypatch):
    """The backoff waits, recorded instead of slept."""
    waits = []
    monkeypatch.setattr(openai_api.time, "sleep", waits.append)
    return waits


@pytest.fixture
def view():
    task = toy_math.generate(1, 0)[0]
    messages = [{"role": "user", "content": task["prompt"]}, {"role": "assistant", "content": "The answer is 1."}]
    return TeacherView(task=task, variant="full", messages=messages, label="attempt",
                       check={"extracted": "1", "passed": False}, turn=1)


@pytest.mark.parametrize("fault", ["500", "503", "429", "garbage", "html", "no_choices", "drop", "hang"])
def test_a_passing_fault_is_retried_with_backoff(endpoint, sleeps, view, fault):
    server = endpoint([fault, fault])
    teacher = OpenAITeacher(server.url, "m", timeout_s=0.5, max_retries=3)
    assert teacher.reply(view) == "Not yet: look again at step 1."
    assert len(server.requests) == 3 and sleeps == [0.5, 1.0]  # exponential backoff between attempts


@pytest.mark.parametrize("fault, says", [("500", "HTTP 500"), ("garbage", "malformed reply"),
                                         ("no_choices", "malformed reply.*no choices"), ("drop", "closed connection"),
                                         ("hang", "timed out")])
def test_a_lasting_fault_fails_clearly_after_the_retries(endpoint, sleeps, view, fault, says):
    server = endpoint(then=fault)
    teacher = OpenAITeacher(server.url, "m", timeout_s=0.5, max_retries=2)
    with pytest.raises(RuntimeError, match=re.escape(server.url) + r" failed after 3 attempts.*" + says):
        teacher.reply(view)
    assert len(server.requests) == 3 and sleeps == [0.5, 1.0]


def test_a_bad_request_is_not_retried(endpoint, sleeps, view):
    server = endpoint(then="400")
    with pytest.raises(RuntimeError, match="rejected the request: HTTP 400"):
        OpenAITeacher(server.url, "m", max_retries=3).reply(view)
    assert len(server.requests) == 1 and sleeps == []


def test_finished_dialogues_survive_an_endpoint_outage_and_resume_exactly(endpoint, sleeps, tmp_path):
    tok = tiny_tokenizer()
    student = Student(tiny_model(tok), tok)
    tasks = toy_math.generate(6, 4)
    engine = dict(max_turns=2, chunk_tasks=2, progress=False)
    dialogue = sections.dialogue(gamma=0.7, max_new_tokens=10, temperature=1.5)
    healthy = endpoint()
    undisturbed = resume.dialogues(tasks, student, OpenAITeacher(healthy.url, "m"), dialogue, seed=1, **engine)
    asked = len(healthy.requests)

    # The endpoint answers the first chunk (one reply per unsolved dialogue after turn 1), then breaks.
    flaky = endpoint(plan=[OK] * 2, then="503")
    teacher = OpenAITeacher(flaky.url, "m", max_retries=1, cache_dir=tmp_path / "cache")
    with pytest.raises(RuntimeError, match=r"chunk 2 of 3 \(teacher endpoint .* failed after 2 attempts.*HTTP 503.*"
                                           r"the 2 dialogues of the first 1 chunk\(s\) are kept"):
        resume.dialogues(tasks, student, teacher, dialogue, seed=1, folder=tmp_path / "work", **engine)
    assert [p.name for p in sorted((tmp_path / "work").iterdir())] == ["chunk-00000.jsonl"]

    back = endpoint()  # the endpoint is back (same replies): the rerun finishes the missing chunks only
    teacher = OpenAITeacher(back.url, "m", cache_dir=tmp_path / "cache")
    resumed = resume.dialogues(tasks, student, teacher, dialogue, seed=1, folder=tmp_path / "work", **engine)
    assert resumed.to_list() == undisturbed.to_list()
    assert len(back.requests) == asked - 2  # the first chunk's replies were neither lost nor asked again
