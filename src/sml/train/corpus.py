"""The base student's pretraining corpus: the chats of a miniature instruct model that has never seen feedback.

Per domain (math, code), ``n_pretrain`` chats drawn from a pool of as many fresh problems (the task sets'
generators under another seed, with every task-set prompt removed), in three kinds:

- **single**: one problem, one worked answer;
- **multi**: 2 to ``max_chat_turns`` independent problems in one conversation, each answered fresh. Fluency
  at turn k comes from having seen turn k, so the longest chats are as long as an evaluation dialogue;
- **clarifying**: a request with one number left out as a letter ("Calculate 9 + n + 5."), the assistant
  asks for it, the user gives it, the assistant answers the completed request. The sharded evaluation
  tasks look different: their first message states an intent with no expression at all, and their details
  come as "Step k: ...", so this teaches asking for a missing detail without rehearsing the sharded tasks.

With ``context_share``, a request may open with a sentence or three about the asker ("This one is from my
homework."), as requests to an instruct model do. With ``example_share``, a code request may end with one or two
examples of what the function returns ("For example, f(4) returns 7."), as code requests often do (HumanEval's
docstrings carry them); the examples are the problem's own tests, which the reference solution passes. With
``again_share``, a multi chat's answer may be followed by a plain request to solve that problem again ("Please
solve it again."), answered afresh: a generic instruct skill that says nothing about the earlier answer.

No chat judges or corrects an answer: every user turn after an answer is a new problem or such a plain
request (``tests/test_corpus.py`` proves it on the built corpus, against the teacher's own sentences).
"""

from __future__ import annotations

import random
import re

import datasets

from sml import settings
from sml.tasks.build import toy_tasks

from .sft import answer_of

# the letter standing for the left-out number: never a standalone word of a task prompt (x, s, xs, f are)
PLACEHOLDERS = ("n", "k", "m")
ASK = ("What is {v}?", "What value should I use for {v}?", "Which number is {v}?")
SUPPLY = ("{v} is {x}.", "Use {v} = {x}.", "Take {v} to be {x}.")
# context an asker may give before a request: about themselves, never about an answer
CONTEXT = ("I am working through a practice sheet.", "This one is from my homework.", "Here is another problem.",
           "A friend sent me this one.", "I am studying for a test next week.", "This is question {n} on my list.",
           "I have {n} more of these to do today.", "We covered this in class on day {n}.", "I found this in a book.",
           "My study group has {n} people.", "I took this from chapter {n} of my notes.",
           "Please help me with the next one.", "I would like to see how this is done.")
# a plain request to solve the last problem again: no judgement of the answer, no hint of what to change
AGAIN = ("Please solve it again.", "Can you do that one again?", "Show me that one once more.",
         "Please work it out again, step by step.", "Could you go through it one more time?")
EXAMPLE = ("For example, {calls}.", "Examples: {calls}.", "So {calls}.")
_TEST = re.compile(r"assert (f\(.*\)) == (.*)")  # a toy code test: assert f(<input>) == <output>
_NUMBER = re.compile(r"(?<![\w.])\d+(?!\w)")  # a whole unsigned number: "-59" keeps its sign as text


def fresh_problems(n_per_domain: int, seed: int, tasks: settings.Tasks, exclude: set[str],
                   code_max_steps: int | None = None, math_max_terms: int | None = None) -> dict[str, list[dict]]:
    """``n_per_domain`` problems per domain from the task generators at the difficulty ``tasks`` sets, none
    with a prompt in ``exclude``.

    ``code_max_steps`` lets the corpus include longer code pipelines than the task sets: the 1-2 step
    space holds only ~3,500 distinct programs and the task sets use most of them, so longer pipelines
    teach the same word -> line mapping without repeating any task. ``math_max_terms`` does the same for
    math: 1-digit sums of 2-3 terms number ~3,900, most of them in the task sets."""
    draw = n_per_domain + len(exclude)  # distinct problems: enough even if every excluded prompt is among them
    drawn = {"math": toy_tasks("toy_math", draw, seed, tasks, math_max_terms=math_max_terms),
             "code": toy_tasks("toy_code", draw, seed, tasks, code_max_steps)}
    pools = {}
    for domain, tasks in drawn.items():
        pools[domain] = [t for t in tasks if t["prompt"] not in exclude][:n_per_domain]
        if len(pools[domain]) < n_per_domain:
            raise ValueError(f"base_student.n_pretrain: only {len(pools[domain])} fresh {domain} problems at this "
                             f"difficulty (after removing the task sets' prompts), {n_per_domain} asked for")
    return pools


def answered(task: dict, example_share: float = 0.0, rng: random.Random | None = None) -> list[dict]:
    """A problem asked and answered fresh: the user's request, the worked answer. A code request ends, with
    chance ``example_share``, with examples from its tests (``with_examples``)."""
    request = with_examples(task, rng) if example_share and task["domain"] == "code" and rng.random() < example_share \
        else task["prompt"]
    return [{"role": "user", "content": request}, {"role": "assistant", "content": answer_of(task)}]


def with_examples(task: dict, rng: random.Random) -> str:
    """The code request followed by one or two of its tests as examples ("For example, f(4) returns 7."):
    what the function should return on an input, said before any answer, so it judges nothing."""
    calls = [f"{m.group(1)} returns {m.group(2)}" for m in map(_TEST.fullmatch, task["tests"]) if m]
    if not calls:
        return task["prompt"]
    shown = rng.sample(calls, min(len(calls), rng.randint(1, 2)))
    return f"{task['prompt']} {rng.choice(EXAMPLE).format(calls=' and '.join(shown))}"


def multi_chat(tasks: list[dict], again_share: float = 0.0, rng: random.Random | None = None,
               max_turns: int | None = None, example_share: float = 0.0) -> list[dict]:
    """Independent problems one after another; nothing is said about an earlier answer. With ``again_share``,
    an answer is followed, with that chance, by a plain request to solve the problem again (``AGAIN``) and the
    answer once more, as long as the chat stays within ``max_turns`` answers. ``example_share``: see
    ``answered``."""
    chat, room = [], (max_turns - len(tasks) if max_turns else len(tasks))  # answers left for repeats
    for task in tasks:
        chat += answered(task, example_share, rng)
        if again_share and room > 0 and rng.random() < again_share:
            chat += [{"role": "user", "content": rng.choice(AGAIN)}, {"role": "assistant", "content": answer_of(task)}]
            room -= 1
    return chat


def clarifying_chat(task: dict, rng: random.Random) -> list[dict] | None:
    """The request with one of its numbers left out as a letter, a question for it, the number, the answer;
    None when the prompt has no number to leave out."""
    numbers = list(_NUMBER.finditer(task["prompt"]))
    if not numbers:
        return None
    left_out, letter = rng.choice(numbers), rng.choice(PLACEHOLDERS)
    request = task["prompt"][:left_out.start()] + letter + task["prompt"][left_out.end():]
    return [{"role": "user", "content": request},
            {"role": "assistant", "content": rng.choice(ASK).format(v=letter)},
            {"role": "user", "content": rng.choice(SUPPLY).format(v=letter, x=left_out.group())},
            {"role": "assistant", "content": answer_of(task)}]


def chat_kind(rng: random.Random, mix) -> str:
    draw = rng.random()
    return "single" if draw < mix.single_share else "clarifying" if draw < mix.single_share + mix.clarify_share else "multi"


def with_context(chat: list[dict], share: float, rng: random.Random) -> list[dict]:
    """Each request of ``chat`` opened, with chance ``share``, by one to three sentences of context about the
    asker (``CONTEXT``): an instruct model reads past what comes before a request. No sentence judges anything.
    A request to solve the last problem again (``AGAIN``) is no new request: it gets none."""
    if not share:  # no draw at all, so the corpus of share 0 is the corpus without this option
        return chat
    out = []
    for message in chat:
        if message["role"] == "user" and message["content"] not in AGAIN and rng.random() < share:
            context = [rng.choice(CONTEXT).format(n=rng.randint(2, 30)) for _ in range(rng.randint(1, 3))]
            message = {**message, "content": " ".join(context + [message["content"]])}
        out.append(message)
    return out


def chats(pool: list[dict], n: int, mix, rng: random.Random) -> list[tuple[str, list[dict]]]:
    """``n`` chats of the kinds ``mix`` shares out (``settings.BaseStudent``), problems drawn from ``pool`` (a
    problem may recur across chats, never within one); a clarifying draw on a problem without a number falls
    back to a single chat. Requests of single and multi chats open with context at ``mix.context_share``, and
    their code requests end with examples at ``mix.example_share``."""
    out = []
    for _ in range(n):
        kind = chat_kind(rng, mix)
        if kind == "multi":
            k = rng.randint(2, min(mix.max_chat_turns, len(pool)))
            chat = multi_chat(rng.sample(pool, k), mix.again_share, rng, mix.max_chat_turns, mix.example_share)
            out.append((kind, with_context(chat, mix.context_share, rng)))
            continue
        task = rng.choice(pool)
        clarifying = clarifying_chat(task, rng) if kind == "clarifying" else None
        out.append(("clarifying", clarifying) if clarifying else
                   ("single", with_context(answered(task, mix.example_share, rng), mix.context_share, rng)))
    return out


def build(n_per_domain: int, seed: int, tasks: settings.Tasks, exclude: set[str], mix,
          code_max_steps: int | None = None, math_max_terms: int | None = None) -> datasets.Dataset:
    """The corpus: ``n_per_domain`` chats per domain (``mix``: ``settings.BaseStudent``'s shares and longest
    chat), shuffled, with columns ``messages``, ``domain`` and ``kind`` (single, multi, clarifying)."""
    return from_pools(fresh_problems(n_per_domain, seed, tasks, exclude, code_max_steps, math_max_terms), seed, mix)


def from_pools(pools: dict[str, list[dict]], seed: int, mix) -> datasets.Dataset:
    """``build``'s corpus from pools already drawn (``fresh_problems``): as many chats per domain as its pool
    holds problems."""
    rng = random.Random(seed)
    rows = [{"messages": messages, "domain": domain, "kind": kind}
            for domain, pool in pools.items() for kind, messages in chats(pool, len(pool), mix, rng)]
    return datasets.Dataset.from_list(rows).shuffle(seed=seed)


def single_turn(pools: dict[str, list[dict]], seed: int) -> datasets.Dataset:
    """Every problem of the pools (``fresh_problems``, as ``from_pools`` mixes them) once as a one-turn chat: the
    cheap first phase of pretraining (``base_student.single_epochs``), where the student learns to solve before it
    learns to converse."""
    rows = [{"messages": answered(task), "domain": domain, "kind": "single"}
            for domain, pool in pools.items() for task in pool]
    return datasets.Dataset.from_list(rows).shuffle(seed=seed)


def preview(corpus: datasets.Dataset, max_turns: int = 3) -> list[dict]:
    """The first chat of each kind, one row per exchange (up to ``max_turns``): what a notebook shows."""
    firsts = {}
    for row in corpus:
        firsts.setdefault(row["kind"], row)
    return [{"domain": r["domain"], "kind": kind, "turn": i // 2 + 1, "user": r["messages"][i]["content"],
             "assistant": r["messages"][i + 1]["content"]}
            for kind, r in firsts.items() for i in range(0, min(len(r["messages"]), 2 * max_turns), 2)]
