"""The base student's pretraining corpus never shows feedback: no teacher sentence, no judgement of an answer,
no correction. The base must be a fluent chat model that has never seen feedback, so that whatever it makes
of feedback is what SML changes (paper premise). And it holds the mix a miniature instruct model needs: chats
as long as an evaluation, a few clarifying exchanges unlike the sharded tasks, no task-set prompt."""

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from sml import settings
from sml.dialogue.environment import TeacherView, classify
from sml.dialogue.teacher import ScriptedTeacher
from sml.tasks import toy_code, toy_math
from sml.train import corpus as chat_corpus

REPO = Path(__file__).resolve().parents[1]
# words that judge or correct an earlier answer, whoever says them
JUDGEMENT = re.compile(r"\b(not right|incorrect|wrong|correct|mistake|try again|well done|good job|too (high|low)|"
                       r"should (be|return)|check your work|is not \S+\.)", re.IGNORECASE)


def teacher_sentences() -> set[str]:
    """The fixed openings of every sentence the scripted teacher writes (up to its first number or code),
    from its replies to wrong answers, questions and other turns in both domains."""
    math = toy_math.generate(20, 1, min_digits=1, max_digits=1)
    code = toy_code.generate(20, 1)
    teacher, openings = ScriptedTeacher(), set()
    for task in math + code:
        wrong = ("1 + 1 = 3\n3 * 2 = 7\nThe answer is 7." if task["domain"] == "math"
                 else "```python\ndef f(x):\n    return 0\n```")
        check = ({"extracted": "7", "passed": False} if task["domain"] == "math" else
                 {"n_passed": 0, "n_tests": 1, "results": [{"test": task["tests"][0], "passed": False, "actual": 0,
                                                            "expected": 1}]})
        for label, text in (("attempt", wrong), ("question", "What is step 1?"), ("other", "Hello.")):
            view = TeacherView(task=task, variant="full", label=label, check=check if label == "attempt" else None,
                               messages=[{"role": "user", "content": task["prompt"]},
                                         {"role": "assistant", "content": text}])
            for sentence in re.split(r"(?<=[.?!])\s+", teacher.reply(view)):
                opening = re.split(r"[\d`(=]", sentence)[0].strip()
                if len(opening.split()) >= 2:
                    openings.add(opening)
    return openings


CFG = settings.load(REPO / "params.yaml")
N = 300  # chats per domain


# any of the sentences about the asker a request may open with (base_student.context_share)
CONTEXT = re.compile("|".join(re.escape(c).replace(re.escape("{n}"), r"\d+") for c in chat_corpus.CONTEXT))


def without_context(request: str) -> str:
    return re.sub(rf"^(?:(?:{CONTEXT.pattern}) )+", "", request)


def build(n=N, exclude=frozenset(), **mix):
    return chat_corpus.build(n, seed=0, tasks=CFG.tasks, exclude=set(exclude),
                           mix=CFG.base_student.model_copy(update=mix))


@pytest.fixture(scope="module")
def built():
    """The corpus as params.yaml mixes it (multi-turn chats, clarifying exchanges)."""
    return build()


def assistant_turns(chat):
    return sum(m["role"] == "assistant" for m in chat)


def test_the_teacher_sentences_are_found():
    """The check below is only as good as this list: it must hold the teacher's feedback openings."""
    openings = teacher_sentences()
    assert {"That is not right.", "Check your work:", "Your function is not right."} <= openings, openings
    assert any(o.startswith("Hint: step") for o in openings) and any(o.startswith("It passes") for o in openings)


def test_the_corpus_never_shows_feedback(built):
    openings = teacher_sentences()
    for chat in built["messages"]:
        for i, message in enumerate(chat):
            said = [o for o in openings if o in message["content"]]
            assert not said, f"a teacher sentence in the corpus: {said[0]!r} in {message['content']!r}"
            if message["role"] == "user" and i > 0 and chat[i - 1]["role"] == "assistant":
                assert not JUDGEMENT.search(message["content"]), f"a judgement of an answer: {message['content']!r}"
            if message["role"] == "assistant":
                assert not JUDGEMENT.search(message["content"]), f"a correction by the assistant: {message['content']!r}"


def test_context_before_a_request_never_judges_and_the_request_follows_it_whole():
    """``base_student.context_share``: requests open with sentences about the asker, at about that share, and
    the rest of the message is the pool's request as it was; none of it is feedback (the checks above), and a
    share of 0 adds none."""
    with_context = build(n=150, context_share=0.5)
    test_the_corpus_never_shows_feedback(with_context)
    opened = 0
    requests = [m["content"] for chat, kind in zip(with_context["messages"], with_context["kind"]) if kind != "clarifying"
                for m in chat if m["role"] == "user"]
    for request in requests:
        bare = without_context(request)
        assert bare.startswith(("Calculate", "Write a Python function")), request
        opened += bare != request
    assert opened / len(requests) == pytest.approx(0.5, abs=0.08)
    for chat in build(n=60, context_share=0.0)["messages"]:
        assert not any(CONTEXT.match(m["content"]) for m in chat)


def test_a_plain_request_to_solve_it_again_follows_an_answer_and_gets_the_same_problem_solved():
    """``base_student.again_share``: in multi chats, an answer is followed, at about that share, by a plain
    request from ``AGAIN`` (never with context before it) and the same problem's answer again; no judgement,
    no teacher sentence (the checks above); chats stay within ``max_chat_turns``; a share of 0 adds none."""
    again = build(n=150, again_share=0.5, context_share=0.3)
    test_the_corpus_never_shows_feedback(again)
    followed = answers = 0
    for chat, kind in zip(again["messages"], again["kind"]):
        assert assistant_turns(chat) <= CFG.base_student.max_chat_turns
        for i, message in enumerate(chat):
            if message["role"] == "user" and any(a in message["content"] for a in chat_corpus.AGAIN):
                assert kind == "multi" and message["content"] in chat_corpus.AGAIN, message  # bare: no context
                assert chat[i + 1]["content"] == chat[i - 1]["content"], chat  # that problem's answer, once more
                assert chat[i - 2]["content"].endswith(("?", ".")) and chat[i - 2]["content"] not in chat_corpus.AGAIN
            if kind == "multi" and message["role"] == "assistant" and i + 1 < len(chat) - 1:
                answers += 1
                followed += chat[i + 1]["content"] in chat_corpus.AGAIN
    # half of the answers to a problem (room allowing), never the answer given again: about a third of all answers
    assert followed / answers == pytest.approx(1 / 3, abs=0.1)
    assert not any(m["content"] in chat_corpus.AGAIN for chat in build(n=60, again_share=0.0)["messages"] for m in chat)


def test_code_requests_may_end_with_examples_that_the_reference_solution_passes():
    """``base_student.example_share``: code requests of single and multi chats end, at about that share, with one
    or two examples ("For example, f(4) returns 7."), each true of the answer that follows; math requests and
    clarifying chats get none; none of it is feedback (the checks above); a share of 0 adds none."""
    shown = build(n=150, example_share=0.5, context_share=0.3)
    test_the_corpus_never_shows_feedback(shown)
    example = re.compile(r" (?:For example,|Examples:|So) (f\(.*\) returns .*)\.$")
    ended = requests = 0
    for chat, domain, kind in zip(shown["messages"], shown["domain"], shown["kind"]):
        for request, answer in zip(chat[::2], chat[1::2]):
            found = example.search(request["content"])
            if domain == "math" or kind == "clarifying":
                assert not found, request
                continue
            requests += 1
            if not found:
                continue
            ended += 1
            namespace = {}
            exec(answer["content"].split("```python\n")[1].split("```")[0], namespace)
            calls = found.group(1).split(" and ")
            assert 1 <= len(calls) <= 2, request
            for call in calls:
                inputs, output = call.split(" returns ")
                assert eval(inputs, namespace) == eval(output), (call, answer["content"])
    assert ended / requests == pytest.approx(0.5, abs=0.08)
    assert not any(example.search(m["content"]) for chat in build(n=60, example_share=0.0)["messages"] for m in chat)

def test_every_answer_is_a_fresh_answer_to_a_new_request(built):
    """No retry, no correction: within a chat no request recurs and no answer is given twice, and every user
    turn after an answer is a new problem (in a clarifying chat, the supplied detail comes before any answer)."""
    for chat, kind in zip(built["messages"], built["kind"]):
        users = [m["content"] for m in chat if m["role"] == "user"]
        answers = [m["content"] for m in chat if m["role"] == "assistant" and classify(m["content"], {
            "domain": "code" if "```" in m["content"] else "math"}) == "attempt"]
        assert len(set(users)) == len(users) and len(set(answers)) == len(answers), chat
        assert [m["role"] for m in chat] == ["user", "assistant"] * (len(chat) // 2)
        after_answer = [without_context(chat[i]["content"]) for i in range(2, len(chat), 2)
                        if chat[i - 1]["content"] in answers]
        assert all(u.startswith(("Calculate", "Write a Python function")) for u in after_answer), chat


def test_the_chats_reach_the_evaluation_length(built):
    turns = Counter(assistant_turns(chat) for chat in built["messages"])
    assert max(turns) == CFG.base_student.max_chat_turns == CFG.dialogue.eval_turns
    assert set(turns) == set(range(1, CFG.base_student.max_chat_turns + 1)), turns  # every length in between
    for domain in ("math", "code"):
        longest = max(assistant_turns(c) for c, d in zip(built["messages"], built["domain"]) if d == domain)
        assert longest == CFG.base_student.max_chat_turns, domain


def test_the_mix_holds_the_configured_shares(built):
    kinds = Counter(built["kind"])
    assert sum(kinds.values()) == 2 * N and len(built) == 2 * N
    share = {k: v / (2 * N) for k, v in kinds.items()}
    assert share["clarifying"] == pytest.approx(CFG.base_student.clarify_share, abs=0.04)
    assert share["single"] == pytest.approx(CFG.base_student.single_share, abs=0.06)  # + clarifying draws without a number
    assert share["multi"] == pytest.approx(1 - CFG.base_student.single_share - CFG.base_student.clarify_share, abs=0.06)
    only_single = build(n=40, single_share=1.0, clarify_share=0.0)
    assert set(only_single["kind"]) == {"single"} and {assistant_turns(c) for c in only_single["messages"]} == {1}


def test_clarifying_chats_ask_for_a_missing_number_and_do_not_look_like_sharded_tasks(built):
    """Request with a letter -> a question -> the number -> the answer of the completed request. Nothing in them
    has the sharded tasks' surface form (an intent without the expression, "Step k: ..." details)."""
    sharded = [t["shards"] for t in toy_math.generate(30, 0) + toy_code.generate(30, 0)]
    intents = {re.split(r"\d", s[0])[0] for s in sharded}
    clarifying = [(c, d) for c, d, k in zip(built["messages"], built["domain"], built["kind"]) if k == "clarifying"]
    assert clarifying
    for chat, domain in clarifying:
        request, question, detail, answer = (m["content"] for m in chat)
        letter, number = re.search(r"(\w) (?:is|=|to be) (\d+)\.$", detail).groups()
        assert re.search(rf"\b{letter}\b", request) and classify(question, {"domain": domain}) == "question"
        assert classify(answer, {"domain": domain}) == "attempt"
        completed = re.sub(rf"\b{letter}\b", number, request)
        assert completed.startswith(("Calculate", "Write a Python function")) and completed != request
        for message in chat:
            assert not message["content"].startswith(("Step ", "Only use the items", "Return ", "Here is more"))
            assert not any(message["content"].startswith(i) for i in intents), message["content"]


def test_a_request_without_a_number_gets_no_clarifying_chat():
    task = {"prompt": "Write a Python function f(s) that takes a string s, reverses it, and returns the result.",
            "domain": "code", "solution": "def f(s):\n    s = s[::-1]\n    return s\n"}
    assert chat_corpus.clarifying_chat(task, random.Random(0)) is None


def test_no_task_set_prompt_is_ever_in_the_corpus():
    """The prompts of the task sets (here: the first problems the corpus's own generators would draw) never
    appear, neither as a request nor, with its number given, as a clarifying request."""
    drawn = toy_math.generate(60, 0, CFG.tasks.math_generator, CFG.tasks.math_min_terms, CFG.tasks.math_max_terms,
                              CFG.tasks.math_min_digits, CFG.tasks.math_max_digits)
    excluded = {t["prompt"] for t in drawn[:30]}

    def requests(corpus):
        for chat in corpus["messages"]:
            users = [m["content"] for m in chat if m["role"] == "user"]
            yield from users
            if len(chat) == 4 and (given := re.search(r"(\w) (?:is|=|to be) (-?\d+)\.$", users[1])):
                yield re.sub(rf"\b{given.group(1)}\b", given.group(2), users[0])

    assert excluded & set(requests(build(n=30))), "the check must bite: without exclusion these prompts appear"
    assert not excluded & set(requests(build(n=30, exclude=excluded)))


def test_the_single_turn_phase_answers_each_problem_of_the_pools_once():
    """Phase 1 of pretraining (``base_student.single_epochs``): the problems the chat mix draws from, each once as
    a one-turn chat, and none of the excluded task-set prompts."""
    drawn = toy_math.generate(60, 0, CFG.tasks.math_generator, CFG.tasks.math_min_terms, CFG.tasks.math_max_terms,
                              CFG.tasks.math_min_digits, CFG.tasks.math_max_digits)
    excluded = {t["prompt"] for t in drawn[:30]}
    pools = chat_corpus.fresh_problems(30, 0, CFG.tasks, excluded)
    singles = chat_corpus.single_turn(pools, seed=0)
    assert set(singles["kind"]) == {"single"} and all(len(chat) == 2 for chat in singles["messages"])
    for domain, pool in pools.items():
        asked = [chat[0]["content"] for chat, d in zip(singles["messages"], singles["domain"]) if d == domain]
        assert sorted(asked) == sorted(t["prompt"] for t in pool)
    assert not excluded & {chat[0]["content"] for chat in singles["messages"]}


def test_the_pools_may_hold_longer_sums_than_the_task_sets():
    """``base_student.math_max_terms``: 1-digit chain sums of 2-3 terms number ~3,900, most of them in the task
    sets, so the corpus may draw sums of up to 4 terms; none is a task-set prompt."""
    small = CFG.tasks.model_copy(update={"math_generator": "chain_sum", "math_max_digits": 1})
    task_sets = toy_math.generate(200, 0, "chain_sum", 2, 3, 1, 1)
    excluded = {t["prompt"] for t in task_sets}
    pools = chat_corpus.fresh_problems(300, 0, small, excluded, math_max_terms=4)
    terms = Counter(json.loads(t["metadata"])["num_terms"] for t in pools["math"])
    assert max(terms) == 4 and min(terms) >= 2 and not excluded & {t["prompt"] for t in pools["math"]}
    assert max(json.loads(t["metadata"])["num_terms"] for t in chat_corpus.fresh_problems(300, 0, small, excluded)["math"]) == 3
