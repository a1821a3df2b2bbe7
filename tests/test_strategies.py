"""The LLM strategy classifier: parsing messy LLM outputs, the mapping onto our three labels, the
prompt, and the classifier against a real local OpenAI-compatible server (labels, disk cache, and
the fallback to the rule label when the judge's output names no single strategy)."""

import json
import re

import pytest
import sections

from sml.evaluation.strategies import DEFINITIONS, LABEL_OF, STRATEGIES, StrategyClassifier, build_messages, make_classifier, \
    parse_strategy
from sml.tasks import toy_code, toy_math
from sml.dialogue.environment import LABELS, classify
from local_server import JSONHandler, serve
from sml.dialogue.llm_teacher import OpenAITeacher


@pytest.mark.parametrize("output, strategy", [
    ("clarification", "clarification"),
    ("Clarification", "clarification"),
    ("  HEDGING.\n", "hedging"),
    ('"refusal"', "refusal"),
    ("`answer_attempt`", "answer_attempt"),
    ("answer attempt", "answer_attempt"),
    ("Answer-Attempt!", "answer_attempt"),
    ("**Discussion**", "discussion"),
    ("Strategy: clarification", "clarification"),
    ("The strategy is interrogation.", "interrogation"),
    ('{"strategy": "missing"}', "missing"),
    ('{"strategy": "Answer Attempt", "why": "not a refusal"}', "answer_attempt"),  # the JSON field decides
    ("refusal (the student says: refusal)", "refusal"),  # one name said twice is still one name
])
def test_parse_strategy_reads_valid_and_messy_outputs(output, strategy):
    assert parse_strategy(output) == strategy


@pytest.mark.parametrize("output", [
    "", "   ", "I think maybe", "question", "attempt", "answer", "clarifications",
    "clarification or interrogation", "hedging / refusal", '{"strategy": 3}', '{"label": "x"}',
])
def test_parse_strategy_rejects_empty_unknown_and_ambiguous_outputs(output):
    assert parse_strategy(output) is None


def test_every_strategy_maps_to_one_of_our_three_labels():
    assert len(STRATEGIES) == len(set(STRATEGIES)) == 7
    assert set(LABEL_OF) == set(STRATEGIES) == set(DEFINITIONS)
    groups = {label: {s for s, lab in LABEL_OF.items() if lab == label} for label in LABELS}
    assert groups == {"attempt": {"answer_attempt", "hedging"}, "question": {"clarification", "interrogation"},
                      "other": {"discussion", "refusal", "missing"}}


def test_prompt_has_definitions_dialogue_and_reply_in_transcript_roles():
    task = toy_math.generate(1, 0)[0]
    dialogue = [{"role": "user", "content": task["prompt"]}, {"role": "assistant", "content": "The answer is 3."},
                {"role": "user", "content": "That is not right."}]
    reply = "Which step comes first?"
    messages = build_messages(dialogue, reply, task)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "user"]
    assert messages[1:4] == dialogue
    system = messages[0]["content"]
    for name, text in DEFINITIONS.items():
        assert f"- {name}: the reply {text}." in system
    assert "exactly one strategy name" in system and "math problem" in system
    assert reply in messages[-1]["content"] and reply not in system
    assert "programming task" in build_messages(dialogue, reply, toy_code.generate(1, 0)[0])[0]["content"]


# --- against a real local endpoint -----------------------------------------------------------------------------

def judge(reply: str) -> str:
    """What the fake judge LLM says about a student reply; some outputs are messy or useless on purpose."""
    rules = [("won't", "Refusal."), ("```", "`answer_attempt`"), ("maybe", "I think maybe"),
             ("either", "clarification or interrogation"), ("tell me", "clarification"),
             (" or ", '{"strategy": "hedging"}')]
    for cue, output in rules:
        if cue in reply.lower():
            return output
    if reply.count("?") >= 2:
        return "INTERROGATION"
    if "?" in reply:
        return "Strategy: clarification"
    return "answer attempt" if "answer is" in reply else "discussion"


class Judge:
    """A real HTTP server on a free port answering ``/v1/chat/completions`` with ``judge(reply)``, the
    reply read from the classifier's prompt; a prompt without one gets a 400 (the test then fails)."""

    def __init__(self):
        self.requests = []
        owner = self

        class Handler(JSONHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(body)
                found = re.search(r"<reply>\n(.*)\n</reply>", body["messages"][-1]["content"], re.DOTALL)
                if found is None:
                    return self.send(400, b'{"error": "no reply to classify"}')
                text = judge(found.group(1))
                self.send(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode())

        self.server, self.url = serve(Handler)


@pytest.fixture
def endpoint():
    server = Judge()
    yield server
    server.server.shutdown()
    server.server.server_close()


def classifier_for(endpoint, tmp_path) -> StrategyClassifier:
    return StrategyClassifier(OpenAITeacher(endpoint.url, "judge", max_retries=0, max_new_tokens=16, temperature=0.0,
                                            cache_dir=tmp_path / "cache"))


def batch(turns):
    """Dialogues (the opening message only), replies and tasks for (domain, reply) pairs."""
    tasks = [{"math": toy_math, "code": toy_code}[domain].generate(1, 0)[0] for domain, _ in turns]
    return [[{"role": "user", "content": t["prompt"]}] for t in tasks], [r for _, r in turns], tasks


TURNS = [  # (domain, student reply, strategy, label)
    ("math", "3 + 4 = 7\nThe answer is 7.", "answer_attempt", "attempt"),
    ("code", "```python\ndef f(x):\n    return x + 1\n```", "answer_attempt", "attempt"),
    ("math", "Which step comes first?", "clarification", "question"),
    ("math", "What is x? And what is y?", "interrogation", "question"),
    ("math", "Please tell me the second number.", "clarification", "question"),  # the rules say "other"
    ("math", "I won't do that.", "refusal", "other"),
    ("math", "", "missing", "other"),
    ("math", "It could be 5 or 6 depending on the order.", "hedging", "attempt"),
    ("math", "First I will multiply, then add.", "discussion", "other"),
]


def test_classifier_labels_turns_through_a_real_endpoint_then_from_the_cache(endpoint, tmp_path):
    dialogues, replies, tasks = batch([(d, r) for d, r, _, _ in TURNS])
    classifier = classifier_for(endpoint, tmp_path)
    assert classifier.strategies(dialogues, replies, tasks) == [s for _, _, s, _ in TURNS]
    asked = len(TURNS) - 1  # the empty reply is "missing" without asking
    assert len(endpoint.requests) == classifier.calls == asked and classifier.fallbacks == 0
    assert all(r["temperature"] == 0 and r["max_tokens"] <= 16 and r["model"] == "judge" for r in endpoint.requests)
    assert classify("Please tell me the second number.", tasks[4]) == "other"  # so the label below is the LLM's

    again = classifier_for(endpoint, tmp_path)  # a new run: everything comes from the disk cache
    assert again.labels(dialogues, replies, tasks) == [label for _, _, _, label in TURNS]
    assert len(endpoint.requests) == asked
    assert (again.backend.hits, again.backend.misses, again.calls) == (asked, 0, asked)


def test_unparseable_judge_outputs_fall_back_to_the_rule_label_and_are_counted(endpoint, tmp_path):
    dialogues, replies, tasks = batch([("math", "Hmm, maybe 12."), ("math", "Either way I am stuck."),
                                       ("math", "Which step comes first?")])
    classifier = classifier_for(endpoint, tmp_path)
    assert classifier.strategies(dialogues, replies, tasks) == ["unparsed", "unparsed", "clarification"]
    assert classifier.fallbacks == 2
    labels = classifier.labels(dialogues, replies, tasks)
    assert labels == ["attempt", "other", "question"]
    assert labels[:2] == [classify(r, t) for r, t in zip(replies[:2], tasks[:2])]
    assert (classifier.calls, classifier.fallbacks, len(endpoint.requests)) == (6, 4, 3)


def test_make_classifier(tmp_path):
    assert make_classifier(sections.classifier()) is None  # rules: the engine keeps its own labels
    made = make_classifier(sections.classifier(kind="openai", model="m", base_url="http://127.0.0.1:9/v1",
                                               cache_dir="data/classifier_cache"), tmp_path)
    assert isinstance(made, StrategyClassifier)
    assert made.backend.params == {"max_new_tokens": 16, "temperature": 0.0}
    assert made.backend.cache_dir == tmp_path / "data" / "classifier_cache"
