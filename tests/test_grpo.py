"""The GRPO bridge: multi-turn conversations as prompt + completion with the teacher's tokens masked."""

from types import SimpleNamespace

import datasets
import pytest
import sections
import torch
from trl import GRPOTrainer

from sml.train import grpo, sft
from sml.dialogue.engine import run_dialogues
from sml.tasks import toy_math
from sml.dialogue.teacher import ScriptedTeacher
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

    [d] = run_dialogues([task], ReplayStudent(tok, tiny_model(tok), script), ScriptedTeacher(), sections.dialogue(),
                        max_turns=max_turns, progress=False)
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
    logged = {}
    grpo.conversation_reward(completions=[None] * 4, reward=out["reward"], solved_turn=out["solved_turn"],
                             log_metric=logged.__setitem__)
    assert logged == {"success": 0.75, "solved_turn": pytest.approx(7 / 3)}


def test_rollout_func_returns_one_conversation_per_prompt_received(tok):
    tasks = toy_math.generate(3, 0)
    model = tiny_model(tok)
    trainer = SimpleNamespace(model=model, processing_class=tok, accelerator=SimpleNamespace(unwrap_model=lambda m: m),
                              state=SimpleNamespace(global_step=0), args=SimpleNamespace(seed=0))
    rollout = grpo.make_rollout_func(tasks, ScriptedTeacher(), sections.dialogue(max_new_tokens=8), max_turns=2)
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


def test_turn_spans_cover_exactly_the_student_tokens(tok):
    dialogues = [dialogue(tok, t) for t in (1, 3, 0)]
    out = grpo.rollout_outputs(dialogues, tok.convert_tokens_to_ids("<|im_end|>"), gamma=0.7)
    for mask, spans in zip(out["env_mask"], out["turn_spans"]):
        covered = [0] * len(mask)
        for start, end in spans:
            covered[start:end] = [1] * (end - start)
        assert covered == mask
    assert out["turn_returns"] == [[1.0], pytest.approx([0.49, 0.7, 1.0]), [0.0] * 4]


def test_turn_advantages_by_hand():
    # One group of 3 conversations: solved at turn 1; solved at turn 2 (gamma 0.5); never (2 turns).
    returns = [[1.0], [0.5, 1.0], [0.0, 0.0]]
    spans = [[(0, 2)], [(0, 1), (3, 5)], [(0, 2), (4, 6)]]
    adv = grpo.turn_advantages(returns, spans, group_size=3, width=7, scale=False)
    turn1 = 1.5 / 3  # mean return at turn 1 over all three
    assert adv[0].tolist() == pytest.approx([1 - turn1] * 2 + [0] * 5)
    # Turn 2 is reached by conversations 1 and 2 only: mean 0.5.
    assert adv[1].tolist() == pytest.approx([0.5 - turn1, 0, 0, 0.5, 0.5, 0, 0])
    assert adv[2].tolist() == pytest.approx([-turn1] * 2 + [0, 0, -0.5, -0.5, 0])
    scaled = grpo.turn_advantages(returns, spans, group_size=3, width=7)
    assert scaled[1, 3].item() == pytest.approx(0.5 / (torch.tensor([1.0, 0.0]).std().item() + 1e-4))
    alone = grpo.turn_advantages([[0.0, 0.0, 1.0], [1.0]], [[(0, 1), (1, 2), (2, 3)], [(0, 1)]], 2, 3)
    assert alone[0, 2].item() == 0.0  # nobody else reached turn 3: no baseline, no credit
    with pytest.raises(ValueError, match="groups of 2"):
        grpo.turn_advantages(returns, spans, group_size=2, width=7)


def length_reward(completions, **kwargs):
    """A reward a random model can earn (the toy tasks it almost never solves): shorter is better."""
    return [-float(len(c)) for c in completions]


def trainer_for(tok, tasks, trainer_class=None, steps=1, lr=0.05, micro_batch=0, max_turns=2, temperature=1.0):
    model = sft.add_adapter(tiny_model(tok), sections.finetune(), seed=0)
    config = grpo.grpo_config("/tmp/sml-test-grpo", sections.online(steps=steps, lr=lr, micro_batch=micro_batch),
                              seed=0)
    return (trainer_class or GRPOTrainer)(
        model=model, reward_funcs=length_reward, args=config, processing_class=tok,
        train_dataset=datasets.Dataset.from_dict({"prompt": [t["prompt"] for t in tasks]}),
        rollout_func=grpo.make_rollout_func(tasks, ScriptedTeacher(),
                                            sections.dialogue(max_new_tokens=8, temperature=temperature),
                                            max_turns=max_turns))


def student_logprob(model, sample) -> float:
    ids = torch.tensor([sample["prompt_ids"] + sample["completion_ids"]])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0, :-1].float(), -1).gather(1, ids[0, 1:, None])[:, 0]
    mask = torch.tensor([0] * len(sample["prompt_ids"]) + sample["env_mask"])[1:].bool()
    return logps[mask].sum().item()


def test_rollouts_sample_from_the_adapter_being_trained(tok):
    tasks = toy_math.generate(4, 0)
    trainer = trainer_for(tok, tasks, max_turns=2, temperature=2.0)  # flat enough that a small update shows
    model = trainer.model
    base = tiny_model(tok)  # the same base weights, no adapter
    lora_before = {n: p.clone() for n, p in model.named_parameters() if "lora_B" in n}
    base_before = {n: p.clone() for n, p in model.named_parameters() if "lora_" not in n}
    trainer.train()
    assert any(not torch.equal(p, lora_before[n]) for n, p in model.named_parameters() if n in lora_before)
    assert all(torch.equal(p, base_before[n]) for n, p in model.named_parameters() if n in base_before)

    merged = sft.inference_copy(model)  # what the rollout samples from: itself, not the live model
    assert not any("lora" in n for n, _ in merged.named_parameters())
    ids = torch.tensor([tok.encode(tasks[0]["prompt"])])
    with torch.no_grad(), model.disable_adapter():
        untrained = model(ids).logits
    with torch.no_grad():
        live = model(ids).logits
        assert torch.allclose(merged(ids).logits, live, atol=1e-4) and not torch.allclose(live, untrained, atol=1e-3)
        for module in model.modules():  # break the live model: the copy must not notice
            if hasattr(module, "lora_B"):
                module.lora_B.default.weight.add_(1.0)
        assert torch.allclose(merged(ids).logits, live, atol=1e-4)
        for module in model.modules():
            if hasattr(module, "lora_B"):
                module.lora_B.default.weight.sub_(1.0)

    rollout = trainer.rollout_func
    prompts = [t["prompt"] for t in tasks]
    out = rollout(prompts, trainer)
    assert out == rollout(prompts, trainer)  # same step, same seed: the same conversations
    # the rollout keeps its merged copy from training's rollout and brings it up to date: it samples as a new copy
    fresh = grpo.make_rollout_func(tasks, ScriptedTeacher(), sections.dialogue(max_new_tokens=8, temperature=2.0),
                                   max_turns=2)
    assert out == fresh(prompts, trainer)
    as_base = rollout(prompts, SimpleNamespace(model=base, processing_class=tok, args=trainer.args, state=trainer.state,
                                               accelerator=trainer.accelerator))
    assert as_base["completion_ids"] != out["completion_ids"]  # so sampling went through the adapter
    samples = [dict(prompt_ids=p, completion_ids=c, env_mask=m)
               for p, c, m in zip(out["prompt_ids"], out["completion_ids"], out["env_mask"])]
    trained = [student_logprob(model.eval(), s) for s in samples]
    assert trained != pytest.approx([student_logprob(base.eval(), s) for s in samples], abs=1e-3)


def test_turn_credit_trainer_trains_on_per_token_advantages(tok, monkeypatch):
    # A random model never solves a task, so every return would be 0: score turns by their tokens instead.
    monkeypatch.setattr(grpo, "turn_returns", lambda d, gamma: [float(sum(ids) % 5) for ids in d.student_ids])
    seen = []

    class Spy(grpo.TurnCreditGRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            seen.append((out["advantages"], out["completion_ids"], out["tool_mask"], inputs))
            return out

    trainer_for(tok, toy_math.generate(4, 1), Spy, max_turns=2).train()
    [(adv, ids, mask, inputs)] = seen
    assert adv.shape == ids.shape  # one advantage per completion token
    assert torch.all(adv[mask == 0] == 0)  # teacher tokens never carry credit
    expected = grpo.turn_advantages([x["turn_returns"] for x in inputs], [x["turn_spans"] for x in inputs], 4,
                                    ids.shape[1])
    assert torch.equal(adv, expected) and adv.abs().sum() > 0


def test_micro_batches_accumulate_to_the_same_step(tok):
    """At scale a step's conversations go through forward/backward a few at a time; the step, its rollout
    (one call with every conversation) and its update stay those of the whole batch at once."""
    tasks = toy_math.generate(4, 2)
    updates, calls = [], []
    for micro_batch in (0, 2):
        trainer = trainer_for(tok, tasks, micro_batch=micro_batch, max_turns=2, temperature=2.0)
        rollout = trainer.rollout_func
        trainer.rollout_func = lambda prompts, t: calls.append((micro_batch, len(prompts))) or rollout(prompts, t)
        trainer.train()
        updates.append({n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n})
        assert trainer.args.gradient_accumulation_steps == (4 if micro_batch else 1)
    assert calls == [(0, 8), (2, 8)]
    assert any(p.abs().sum() > 0 for p in updates[0].values())
    assert all(torch.allclose(updates[0][n], updates[1][n], atol=1e-5) for n in updates[0])


def test_grpo_trains_in_bf16_exactly_when_asked(tmp_path):
    """student.dtype bfloat16 -> bf16 mixed precision, as SFT (on a CPU-only machine through the CPU's autocast)."""
    def config(bf16):
        return grpo.grpo_config(str(tmp_path), sections.online(), seed=0, bf16=bf16)
    assert config(True).bf16 and not config(False).bf16


def test_length_grouped_micro_batches_make_the_same_update_from_fewer_padded_tokens(tok):
    """``LengthGroupedGRPOTrainer`` (what ``grpo.train`` uses): the step's conversations reach its micro-batches
    longest first, each cut to the columns its rows use; the update is TRL's own, shuffled and padded to the
    step's longest conversation."""
    tasks = toy_math.generate(4, 2)
    updates, seen = [], {}

    def spy(base):
        class Spy(base):
            def _compute_loss(self, model, inputs):
                rows = inputs["prompt_mask"].sum(1) + inputs["completion_mask"].sum(1)
                seen.setdefault(base, []).append((inputs["prompt_mask"], inputs["completion_mask"], rows))
                return super()._compute_loss(model, inputs)
        return Spy

    for base in (GRPOTrainer, grpo.LengthGroupedGRPOTrainer):
        trainer = trainer_for(tok, tasks, spy(base), micro_batch=2, max_turns=3, temperature=2.0)
        trainer.train()
        updates.append({n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n})
    assert any(p.abs().sum() > 0 for p in updates[0].values())
    assert all(torch.allclose(updates[0][n], updates[1][n], atol=1e-5) for n in updates[0])

    grouped = seen[grpo.LengthGroupedGRPOTrainer]
    lengths = torch.cat([rows for *_, rows in grouped])
    assert torch.equal(lengths, lengths.sort(descending=True).values)  # longest first, across micro-batches
    for prompt_mask, completion_mask, _ in grouped:  # no column that no row uses
        assert prompt_mask[:, 0].any() and completion_mask[:, -1].any()
    cells = {base: sum(p.numel() + c.numel() for p, c, _ in calls) for base, calls in seen.items()}
    assert cells[grpo.LengthGroupedGRPOTrainer] < cells[GRPOTrainer]


def test_padding_is_dropped_only_where_no_row_uses_it():
    batch = {"prompt_ids": torch.tensor([[0, 0, 5, 6], [0, 7, 8, 9]]),
             "prompt_mask": torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]]),
             "completion_ids": torch.tensor([[1, 2, 0, 0, 0], [3, 4, 5, 0, 0]]),
             "completion_mask": torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]),
             "advantages": torch.tensor([0.5, -0.5]), "tool_mask": torch.tensor([[1, 0, 0, 0, 0], [1, 0, 1, 0, 0]]),
             "num_items_in_batch": torch.tensor(3), "solved_turn": [0, 2]}
    out = grpo.without_padding(batch)
    assert out["prompt_ids"].tolist() == [[0, 5, 6], [7, 8, 9]]
    assert out["completion_ids"].tolist() == [[1, 2, 0], [3, 4, 5]]
    assert out["tool_mask"].tolist() == [[1, 0, 0], [1, 0, 1]]
    assert torch.equal(out["advantages"], batch["advantages"]) and out["num_items_in_batch"] == 3
    ordered = grpo.longest_first(batch)  # row 1 is 6 tokens long, row 0 is 4
    assert ordered["prompt_ids"].tolist() == [[0, 7, 8, 9], [0, 0, 5, 6]] and ordered["solved_turn"] == [2, 0]
    assert ordered["advantages"].tolist() == [-0.5, 0.5] and ordered["num_items_in_batch"] == 3
