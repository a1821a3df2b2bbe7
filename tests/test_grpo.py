"""The GRPO bridge: multi-turn conversations as prompt + completion with the teacher's tokens masked."""

from types import SimpleNamespace

import pytest

from sml import grpo
from sml.engine import run_dialogues
from sml.tasks import toy_math
from sml.teacher import ScriptedTeacher
from tiny_models import ReplayStudent, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def dialogue(tok, solved_at, max_turns=4, seed=3):
    """A real engine dialogue whose student answers wrong until turn ``solved_at`` (0: never)."""
    task = toy_math.generate(1, seed)[0]
    answer = int(task["answer"])
    turn = iter(range(1, 100))

    def script(prompt):
        t = next(turn)
        return f"I get {answer}. The answer is {answer}." if t == solved_at else f"The answer is {answer + t}."

    [d] = run_dialogues([task], ReplayStudent(tok, tiny_model(tok), script), ScriptedTeacher(), max_turns=max_turns,
                        progress=False)
    return d


@pytest.mark.parametrize("solved_at, turns", [(1, 1), (2, 2), (4, 4), (0, 4)])
def test_env_mask_is_exactly_the_student_tokens_of_the_template(tok, solved_at, turns):
    d = dialogue(tok, solved_at)
    assert d.turns == turns
    sample = grpo.conversation_sample(d, tok.convert_tokens_to_ids("<|im_end|>"))
    # Oracle: the chat template's own {% generation %} marks over the rendered conversation.
    rendered = tok.apply_chat_template(d.messages, return_dict=True, return_assistant_tokens_mask=True)
    ids, marks = rendered["input_ids"], rendered["assistant_masks"]
    n = len(sample["prompt_ids"]) + len(sample["completion_ids"])
    assert sample["prompt_ids"] + sample["completion_ids"] == ids[:n]  # built turn by turn = rendered at once
    assert sample["env_mask"] == marks[len(sample["prompt_ids"]):n]
    assert tok.decode(ids[n:]).strip() == ""  # only the template's trailing newline is left out
    student_text = tok.decode([t for t, m in zip(sample["completion_ids"], sample["env_mask"]) if m],
                              skip_special_tokens=True)
    assert student_text == "".join(m["content"] for m in d.messages if m["role"] == "assistant")
    assert sum(1 - m for m in sample["env_mask"]) > 0 or turns == 1  # teacher tokens are masked out


def test_rewards_are_the_discounted_returns(tok):
    dialogues = [dialogue(tok, t) for t in (1, 2, 4, 0)]
    out = grpo.rollout_outputs(dialogues, tok.convert_tokens_to_ids("<|im_end|>"), gamma=0.7)
    assert out["reward"] == pytest.approx([1.0, 0.7, 0.7 ** 3, 0.0])
    assert out["solved_turn"] == [1, 2, 4, 0] and out["logprobs"] is None
    assert grpo.conversation_reward(completions=[None] * 4, reward=out["reward"]) == out["reward"]


def test_rollout_func_returns_one_conversation_per_prompt_received(tok):
    tasks = toy_math.generate(3, 0)
    model = tiny_model(tok)
    trainer = SimpleNamespace(model=model, processing_class=tok, accelerator=SimpleNamespace(unwrap_model=lambda m: m),
                              state=SimpleNamespace(global_step=0), args=SimpleNamespace(seed=0))
    rollout = grpo.make_rollout_func(tasks, ScriptedTeacher(), max_turns=2, max_new_tokens=8)
    prompts = [t["prompt"] for t in tasks for _ in range(3)]  # trl repeats each prompt once per generation
    model.train()
    out = rollout(prompts, trainer)
    assert len(out["prompt_ids"]) == len(out["completion_ids"]) == len(out["env_mask"]) == len(out["reward"]) == 9
    for prompt, ids in zip(prompts, out["prompt_ids"]):
        assert prompt in tok.decode(ids)
    assert all(len(m) == len(c) for m, c in zip(out["env_mask"], out["completion_ids"]))
    assert model.training  # the trainer's mode is restored after sampling
    with pytest.raises(KeyError, match="match no task"):
        rollout(["What is 1 + 1?"], trainer)
