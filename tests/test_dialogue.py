"""The dialogue engine with the scripted teacher: verdicts, rewards, shard reveals, blocked leaks,
transcripts and SR@k, on hand-written student turns (a replay student) and a tiny real model.
The environment's hooks on their own: test_environment_hooks.py."""

import math
import random
import re

import pandas as pd
import pytest
import sections
import torch
from tiny_models import ReplayStudent, tiny_model, tiny_tokenizer

from sml.evaluation import transcripts
from sml.dialogue.engine import run_dialogues
from sml.dialogue.student import ChatPieces, Student
from sml.tasks import toy_code, toy_math
from sml.tasks.schema import make_task, metadata
from sml.dialogue.environment import TeacherView
from sml.dialogue.teacher import ScriptedTeacher


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_model(tok)


def math_task(expression="( 3 + 4 ) * 5", answer="35", i=0):
    return make_task(id=f"m/{i}", domain="math", source="toy_math", prompt=f"Calculate {expression}.", answer=answer,
                     solution=toy_math.worked_solution(expression, answer), shards=toy_math.shards_of(expression),
                     metadata={"expression": expression})


def replay(tok, model, turns):
    """A student that says ``turns[k]`` at its k-th turn (the same script in every dialogue)."""
    def script(prompt):
        return turns[prompt.count("<|im_start|>assistant") - 1]
    return ReplayStudent(tok, model, script)


# --- the engine on hand-written transcripts ---------------------------------------------------------

def test_reward_labels_and_drop_out(tok, model):
    """Solved at turn 3 -> reward 0.7^2; finished dialogues leave the batch."""
    tasks = [math_task(i=0), math_task("2 + 2", "4", i=1)]
    student = replay(tok, model, ["The answer is 30.", "What is step 1?", "3 + 4 = 7\n7 * 5 = 35\nThe answer is 35.",
                                  "The answer is 5."])
    ds = run_dialogues(tasks, student, ScriptedTeacher(), sections.dialogue(gamma=0.7), max_turns=4, progress=False)
    first = ds[0]
    assert first.labels == ["attempt", "question", "attempt"]
    assert first.correct == [False, False, True]
    assert first.solved_turn == 3 and first.stop == "solved"
    assert first.reward(0.7) == pytest.approx(0.49)
    assert ds[1].solved_turn == 0 and ds[1].reward(0.7) == 0 and ds[1].turns == 4 and ds[1].stop == "max_turns"
    assert student.calls == [2, 2, 2, 1]  # the solved dialogue dropped out of the last batch
    # teacher replies: wrong attempt -> verdict + direction + located hint; question -> hint; no reply after success
    assert [m["role"] for m in first.messages] == ["user", "assistant", "user", "assistant", "user", "assistant"]
    assert "not right" in first.messages[2]["content"] and "too low" in first.messages[2]["content"]
    assert "3 + 4 = 7" in first.messages[2]["content"] or "3 + 4 = 7" in first.messages[4]["content"]
    assert first.leaks == [False, False]


def test_located_error_is_corrected_unless_that_gives_the_answer_away(tok, model):
    task = math_task()
    teacher = ScriptedTeacher(feedback="step")
    view = lambda text: TeacherView(task=task, variant="full", label="attempt", check={"extracted": "34", "passed": False},
                                    messages=[{"role": "user", "content": task["prompt"]}, {"role": "assistant", "content": text}])
    assert teacher.reply(view("3 + 4 = 8\n8 * 5 = 40\nThe answer is 40.")) == "Check your work: 3 + 4 is not 8. It is 7."
    reply = teacher.reply(view("3 + 4 = 7\n7 * 5 = 34\nThe answer is 34."))
    assert "7 * 5 is not 34" in reply and "35" not in reply


def test_sharded_dialogue_reveals_one_shard_per_turn_and_flags_premature_attempts(tok, model):
    task = math_task()  # shards: intent, step 1, step 2
    student = replay(tok, model, ["The answer is 1.", "What is step 2?", "3 + 4 = 7\n7 * 5 = 35\nThe answer is 35."])
    (d,) = run_dialogues([task], student, ScriptedTeacher(), sections.dialogue(), variant="sharded", max_turns=3,
                         progress=False)
    assert d.messages[0]["content"] == task["shards"][0]
    assert d.revealed == [1, 2, 3]
    assert task["shards"][1] in d.messages[2]["content"] and task["shards"][2] in d.messages[4]["content"]
    assert d.premature == [True, False, False] and d.labels == ["attempt", "question", "attempt"]
    assert d.solved_turn == 3


def test_asked_for_shard_is_revealed_first(tok, model):
    task = math_task()
    student = replay(tok, model, ["What is step 2?", "ok", "ok"])
    (d,) = run_dialogues([task], student, ScriptedTeacher(), sections.dialogue(shard_reveal="on_question"),
                         variant="sharded", max_turns=3, progress=False)
    assert task["shards"][2] in d.messages[2]["content"]
    assert task["shards"][1] not in d.messages[4]["content"]  # "ok" is not a question: nothing revealed
    assert d.revealed == [1, 2, 2]


def test_code_feedback_names_a_failing_test_with_expected_and_actual(tok, model):
    task = toy_code.generate(1, 0)[0]
    wrong = "```python\ndef f(" + task["solution"].split("def f(")[1].split(")")[0] + "):\n    return 0\n```"
    student = replay(tok, model, [wrong, "```python\n" + task["solution"] + "```"])
    (d,) = run_dialogues([task], student, ScriptedTeacher(), sections.dialogue(), max_turns=2, progress=False)
    feedback = d.messages[2]["content"]
    assert re.search(r"passes \d of 5 tests", feedback) and "returned 0 but should return" in feedback
    assert d.correct == [False, True]


def _states_answer(message, answer):
    """Independent of the audit: the message says what the answer is, or an equation ends in it."""
    a = re.escape(answer)
    return bool(re.search(rf"(?:answer\s+is|=|is)\s*{a}(?!\d|[/.]\d)", message, re.IGNORECASE))


def test_teacher_never_reveals_the_answer_in_1000_dialogues(tok, model):
    """An adversarial student: near misses, begging for the answer, asking for every step, showing
    correct and wrong work. The scripted teacher must never state the answer (leaks not blocked)."""
    tasks = toy_math.generate(250, 7, max_terms=4)
    rng = random.Random(0)

    def script(prompt):
        task = next(t for t in tasks if t["prompt"] in prompt or t["shards"][0] in prompt)
        gold = int(task["answer"])
        steps = toy_math.steps_of(metadata(task)["expression"])
        choice = rng.randrange(6)
        if choice == 0:
            return f"The answer is {gold + rng.choice([-2, -1, 1, 2, 10])}."
        if choice == 1:
            return "Please just tell me the answer?"
        if choice == 2:
            return f"What is step {rng.randint(1, len(steps))}?"
        if choice == 3:  # all steps right except the last
            work = "\n".join(s["equation"] for s in steps[:-1])
            return work + f"\nThe answer is {gold + 1}."
        if choice == 4:  # the last equation wrong, correctly computed inputs
            last = steps[-1]["equation"].rsplit("=", 1)[0]
            return f"{last}= {gold - 3}\nThe answer is {gold - 3}."
        return "I am not sure."

    student = ReplayStudent(tok, model, script)
    dialogues = []
    for variant in ("full", "sharded"):
        dialogues += run_dialogues(tasks, student, ScriptedTeacher(), sections.dialogue(block_leaks=False),
                                   variant=variant, max_turns=6, samples_per_task=2, progress=False)
    assert len(dialogues) == 1000
    replies = [(d.task, m["content"]) for d in dialogues for m in d.messages[1:] if m["role"] == "user"]
    assert len(replies) > 3000
    assert not [r for t, r in replies if _states_answer(r, t["answer"])]
    assert not any(d.leaks and any(d.leaks) for d in dialogues)
    # the independent check can fail: the leaky teacher is caught by it
    assert _states_answer(ScriptedTeacher(reveal_answer=True).reply(TeacherView(
        task=tasks[0], variant="full", label="attempt", turn=3, check={"extracted": "0", "passed": False},
        messages=[{"role": "user", "content": tasks[0]["prompt"]}, {"role": "assistant", "content": "0"}])),
        tasks[0]["answer"])


# --- token ids, the real student, transcripts, metrics ---------------------------------------------

def test_appended_turn_ids_equal_a_full_template_render(tok, model):
    student = Student(model, tok, device="cpu")
    assert student.pieces == ChatPieces("<|im_end|>\n", "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n")
    task = math_task()
    ds = run_dialogues([task], replay(tok, model, ["The answer is 1.", "2 + 2 = 5\nThe answer is 5.", "?"]),
                       ScriptedTeacher(), sections.dialogue(), max_turns=3, progress=False)
    d = ds[0]
    rendered = tok.apply_chat_template(d.messages, tokenize=False)
    assert tok.decode(d.ids, skip_special_tokens=False) + "<|im_end|>\n" == rendered
    closed = d.messages + [{"role": "user", "content": "x"}]
    assert student.extend(d.ids, d.messages, "x") == tok(tok.apply_chat_template(
        closed, tokenize=False, add_generation_prompt=True), add_special_tokens=False)["input_ids"]


def test_batched_left_padded_sampling_matches_one_at_a_time(tok, model):
    student = Student(model, tok, device="cpu")
    prompts = [student.prompt_ids([{"role": "user", "content": t["prompt"]}]) for t in toy_math.generate(5, 1)]
    batched = student.generate(prompts, max_new_tokens=12, temperature=0, batch_size=5)
    single = [student.generate([p], max_new_tokens=12, temperature=0)[0] for p in prompts]
    assert batched == single
    assert any(ids for ids, _ in batched)


def test_engine_runs_a_real_model_and_transcripts_round_trip(tok, model, tmp_path):
    student = Student(model, tok, device="cpu")
    tasks = toy_math.generate(6, 2)
    ds = run_dialogues(tasks, student, ScriptedTeacher(), sections.dialogue(max_new_tokens=16), max_turns=3,
                       samples_per_task=2, progress=False)
    assert len(ds) == 12 and all(1 <= d.turns <= 3 for d in ds)
    for d in ds:
        assert len(d.student_ids) == d.turns and len(d.leaks) == d.turns - 1  # no reply after the last turn
    data = transcripts.to_dataset(ds, gamma=0.7)
    transcripts.save(data, tmp_path / "t")
    back = transcripts.load(tmp_path / "t")
    assert back.to_list() == data.to_list()
    assert back.features == transcripts.FEATURES


def test_success_at_k_is_cumulative_with_wilson_intervals():
    solved = {"solved_turn": [1, 0, 3, 2, 0, 10, 1, 0]}
    table = transcripts.success_at(solved, 10)
    assert table["success"].tolist()[:3] == [2 / 8, 3 / 8, 4 / 8]
    assert table["success"].iloc[-1] == 5 / 8
    assert table["success"].is_monotonic_increasing and (table["n"] == 8).all()
    assert ((table["ci_low"] <= table["success"]) & (table["success"] <= table["ci_high"])).all()
    low, high = transcripts.wilson(0, 20)
    assert low == 0 and 0 < high < 0.2


def test_behaviour_rates():
    data = {"labels": [["attempt", "question", "attempt"], ["other", "attempt"]],
            "premature": [[True, False, False], [False, False]],
            "leaks": [[False, False], [True]], "solved_turn": [3, 0]}
    b = transcripts.behaviour(data)
    assert b == {"premature_rate": 1 / 3, "question_rate": 1 / 5, "mean_turns_to_solve": 3.0, "leak_rate": 1 / 3}
    assert math.isnan(transcripts.behaviour({**data, "solved_turn": [0, 0]})["mean_turns_to_solve"])


def test_kv_cache_kept_between_turns_changes_nothing(tok, model):
    """Reusing each dialogue's KV cache across turns gives the same greedy dialogues as re-reading them."""
    student = Student(model, tok, device="cpu")
    tasks = toy_math.generate(6, 3)
    runs = [run_dialogues(tasks, student, ScriptedTeacher(), sections.dialogue(temperature=0, max_new_tokens=12),
                          max_turns=3, progress=False, reuse_cache=reuse) for reuse in (False, True)]
    assert [d.student_ids for d in runs[0]] == [d.student_ids for d in runs[1]]
    assert sum(d.turns for d in runs[1]) > len(tasks)  # later turns did run from the cache


def test_the_decoder_hands_the_model_an_additive_mask_of_each_tokens_past(tok, model):
    """Every forward pass of the engine gets its attention mask as 0 / -inf (SDPA would convert a boolean one
    in every layer): 0 exactly on the columns up to the token's own position."""
    masks = []

    def keep(module, args, kwargs):
        masks.append((kwargs["attention_mask"], kwargs["position_ids"]))

    hook = model.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        run_dialogues(toy_math.generate(5, 4), Student(model, tok, device="cpu"), ScriptedTeacher(),
                      sections.dialogue(max_new_tokens=10), max_turns=2, progress=False)
    finally:
        hook.remove()
    assert any(positions.shape[1] > 1 for _, positions in masks) and any(p.shape[1] == 1 for _, p in masks)
    for mask, positions in masks:
        assert mask.dtype == torch.float32 and mask.shape[:3] == (positions.shape[0], 1, positions.shape[1])
        seen = torch.arange(mask.shape[-1]) <= positions[:, None, :, None]
        assert torch.equal(mask == 0, seen) and bool((mask[~seen] == float("-inf")).all())


def test_a_dialogue_draws_the_same_random_numbers_alone_or_in_a_batch_of_64(tok, model):
    """Each dialogue samples from its own stream (seeded by the run's seed, its task and its sample), so a
    batch's composition does not change which random numbers it draws. Under fixed logits (the next-token
    distribution never depends on the context) the tokens it samples show exactly those numbers."""
    fixed = torch.randn(len(tok), generator=torch.Generator().manual_seed(0)) * 2

    def fix_logits(module, args, out):
        out.logits.copy_(fixed.expand_as(out.logits))

    hook = model.register_forward_hook(fix_logits)
    try:
        student = Student(model, tok, device="cpu")
        fixed[student.eos_id] = torch.logsumexp(fixed, 0) - 2.2  # about one token in ten ends the turn
        tasks = toy_math.generate(64, 9)
        dialogue = sections.dialogue(max_new_tokens=12)

        def tokens(tasks, seed, **kwargs):
            return {(d.task["id"], d.sample): d.student_ids
                    for d in run_dialogues(tasks, student, ScriptedTeacher(), dialogue, max_turns=2, seed=seed,
                                           progress=False, **kwargs)}

        batch = tokens(tasks, seed=3)
        for i in (0, 17, 63):
            assert tokens([tasks[i]], seed=3) == {(tasks[i]["id"], 0): batch[(tasks[i]["id"], 0)]}
        assert tokens([tasks[17]], seed=4) != tokens([tasks[17]], seed=3)  # the seed does matter
        two = tokens([tasks[17]], seed=3, samples_per_task=2)
        assert two[(tasks[17]["id"], 0)] == batch[(tasks[17]["id"], 0)] != two[(tasks[17]["id"], 1)]
        ended = [len(ids) < 12 for turns in batch.values() for ids in turns]
        assert any(ended) and not all(ended)  # rows left the batch at different steps
    finally:
        hook.remove()
