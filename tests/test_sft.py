"""Offline SML and single-turn SFT plumbing: loss masks on the real chat template, LoRA training that
changes only the adapter, seeding, and the training data of both conditions."""

import datasets
import pytest
import sections
import torch
from trl import SFTTrainer

from sml.train import sft
from sml.evaluation import transcripts
from sml.dialogue.engine import run_dialogues
from sml.dialogue.student import Student
from sml.tasks import toy_math
from sml.dialogue.teacher import ScriptedTeacher
from tiny_models import ReplayStudent, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def three_turn_dialogue(tok):
    """A real engine dialogue: wrong, wrong, then correct (student turns written by hand)."""
    task = toy_math.generate(1, 3)[0]
    answer = int(task["answer"])
    replies = iter([f"The answer is {answer + 7}.", "I think it is 1.", f"Then 2 + 2 = 4. The answer is {answer}."])
    student = ReplayStudent(tok, tiny_model(tok), lambda prompt: next(replies))
    [dialogue] = run_dialogues([task], student, ScriptedTeacher(), sections.dialogue(), max_turns=4, progress=False)
    assert dialogue.solved_turn == 3
    return dialogue


def sft_rows(tok, data, **config):
    trainer = SFTTrainer(model=tiny_model(tok), args=sft.sft_config("/tmp/unused", epochs=1, batch_size=2, lr=1e-3,
                                                                     seed=0, **config),
                         train_dataset=data, processing_class=tok)
    return trainer.train_dataset


def test_assistant_masks_cover_exactly_the_student_tokens(tok):
    dialogue = three_turn_dialogue(tok)
    data = sft.successful(transcripts.to_dataset([dialogue], gamma=0.7))
    [row] = sft_rows(tok, data)
    # The trainer renders the whole chat at once; the engine built the same ids turn by turn.
    end = tok.encode("<|im_end|>\n", add_special_tokens=False)
    assert row["input_ids"] == dialogue.ids + end
    expected = [0] * len(row["input_ids"])
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    for start, ids in zip(dialogue.turn_starts, dialogue.student_ids):
        for i in range(start, start + len(ids) + 1):  # the student's words and the end-of-turn token
            expected[i] = 1
        assert row["input_ids"][start + len(ids)] == eos
    # TRL builds the labels: the ids where the loss applies, -100 everywhere else.
    assert [int(label != -100) for label in row["labels"]] == expected
    assert all(label in (-100, i) for label, i in zip(row["labels"], row["input_ids"]))
    assert sum(expected) == sum(len(ids) + 1 for ids in dialogue.student_ids)


def test_successful_keeps_only_solved_dialogues(tok):
    solved = three_turn_dialogue(tok)
    task = toy_math.generate(1, 4)[0]
    student = ReplayStudent(tok, tiny_model(tok), lambda prompt: "The answer is 100000.")
    [failed] = run_dialogues([task], student, ScriptedTeacher(), sections.dialogue(), max_turns=2, progress=False)
    kept = sft.successful(transcripts.to_dataset([failed, solved], gamma=0.7))
    assert kept.column_names == ["messages"] and len(kept) == 1
    assert kept[0]["messages"] == solved.messages


def test_single_turn_data_matches_the_budget_and_uses_reference_answers():
    tasks = toy_math.generate(5, 0)
    data = sft.single_turn(tasks, 12, seed=0)
    assert len(data) == 12
    by_prompt = {t["prompt"]: t for t in tasks}
    for messages in data["messages"]:
        user, assistant = messages
        assert assistant["content"] == sft.answer_of(by_prompt[user["content"]])
    assert {m[0]["content"] for m in data["messages"]} == set(by_prompt)  # every task before any repeats
    assert data["messages"] == sft.single_turn(tasks, 12, seed=0)["messages"]
    with pytest.raises(ValueError, match="st_sft"):
        sft.single_turn([], 3, seed=0)


def small_run(tok, seed, steps_data):
    torch.manual_seed(123)  # the same base model for every run
    model = sft.add_adapter(tiny_model(tok), sections.finetune(lora_r=4, lora_alpha=8), seed=seed)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    sft.train(model, tok, steps_data, "/tmp/sml-test-sft", sections.finetune(epochs=1, batch_size=4, lr=5e-3),
              seed=seed, logging_steps=1)
    after = {k: v.detach().clone() for k, v in model.named_parameters()}
    return before, after


def test_lora_weights_change_and_base_weights_do_not(tok):
    data = sft.single_turn(toy_math.generate(12, 0), 12, seed=0)
    before, after = small_run(tok, 0, data)
    lora = [k for k in before if "lora_" in k]
    base = [k for k in before if "lora_" not in k]
    assert lora and base
    assert all(not torch.equal(before[k], after[k]) for k in lora if "lora_B" in k)
    assert all(torch.equal(before[k], after[k]) for k in base)


def test_seeding_before_the_adapter_gives_identical_adapters(tok):
    data = sft.single_turn(toy_math.generate(8, 0), 8, seed=0)
    _, first = small_run(tok, 7, data)
    _, again = small_run(tok, 7, data)
    _, other = small_run(tok, 8, data)
    lora = [k for k in first if "lora_" in k]
    assert all(torch.equal(first[k], again[k]) for k in lora)
    assert any(not torch.equal(first[k], other[k]) for k in lora)


def test_training_without_examples_is_a_clear_error(tok):
    model = sft.add_adapter(tiny_model(tok), sections.finetune(lora_r=2, lora_alpha=4), seed=0)
    empty = datasets.Dataset.from_list([{"messages": [{"role": "user", "content": "x"}]}]).select([])
    with pytest.raises(ValueError, match="no training examples"):
        sft.train(model, tok, empty, "/tmp/sml-test-sft", sections.finetune(), seed=0)


def test_merged_inference_copy_samples_like_the_adapter(tok):
    model = sft.add_adapter(tiny_model(tok), sections.finetune(lora_r=4, lora_alpha=8), seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained-looking adapter
    ids = torch.tensor([tok.encode("What is 3 + 4?")])
    merged = sft.inference_copy(model)
    model.eval()
    # merging reorders float sums: logits of size ~10 differ by ~1e-4 relative, depending on the thread count
    assert torch.allclose(model(input_ids=ids).logits, merged(input_ids=ids).logits, rtol=1e-4, atol=1e-3)
    assert any("lora_B" in n for n, _ in model.named_parameters())  # the trainable adapter is untouched


def test_a_kept_inference_copy_is_brought_up_to_date_bit_for_bit(tok):
    model = sft.add_adapter(tiny_model(tok), sections.finetune(lora_r=4, lora_alpha=8), seed=0)
    lora = [p for name, p in model.named_parameters() if "lora_" in name]
    kept = sft.inference_copy(model)
    for round_ in range(2):  # the adapter moves (as a training step moves it); the kept copy follows
        with torch.no_grad():
            for p in lora:
                p.add_(torch.randn_like(p) * 0.3)
        assert sft.inference_copy(model, into=kept) is kept
        fresh = sft.inference_copy(model)
        assert fresh is not kept
        assert kept.state_dict().keys() == fresh.state_dict().keys()
        assert all(torch.equal(p, fresh.state_dict()[name]) for name, p in kept.state_dict().items())
    assert any(not torch.equal(p, q) for p, q in zip(kept.parameters(), tiny_model(tok).parameters()))


def test_a_kept_inference_copy_is_not_reused_when_more_than_lora_trains(tok):
    model = sft.add_adapter(tiny_model(tok), sections.finetune(lora_r=4, lora_alpha=8), seed=0)
    kept = sft.inference_copy(model)
    before = {name: p.clone() for name, p in kept.state_dict().items()}
    norm = next(p for name, p in model.named_parameters() if "norm" in name)
    norm.requires_grad_(True)  # a weight the refresh would not carry over
    assert sft.inference_copy(model, into=kept) is not kept
    assert all(torch.equal(p, before[name]) for name, p in kept.state_dict().items())  # left as it was


def test_a_saved_student_encodes_text_like_the_tokenizer_it_was_trained_with(tok, tmp_path):
    """transformers 5 would reload our BPE as a Qwen2 tokenizer (the model type) with another whitespace
    split; SFT data encoded that way taught the student token sequences it never produced."""
    tiny_model(tok).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    student = Student.load(str(tmp_path))
    text = "```python\ndef f(x):\n    x = x + 12\n    return x\n```"
    assert student.encode(text) == tok(text, add_special_tokens=False)["input_ids"]
    assert student.tokenizer.apply_chat_template([{"role": "user", "content": text}]) == \
        tok.apply_chat_template([{"role": "user", "content": text}])


def test_training_precision_follows_the_student_dtype(tok, tmp_path):
    """bf16 mixed precision exactly when the student is loaded as bfloat16 (student.dtype), fp32 otherwise,
    as GRPO derives it (notebooks: ``bf16=dtype == "bfloat16"``); pretraining and every SFT condition share it."""
    for dtype in ("float32", "bfloat16", "float16", "auto"):
        assert sft.uses_bf16(dtype) == (dtype == "bfloat16")
    assert sft.uses_bf16(torch.bfloat16) and not sft.uses_bf16(torch.float32)
    common = dict(epochs=1, batch_size=2, lr=1e-3, seed=0)
    bf16 = sft.sft_config(str(tmp_path / "bf16"), **common, bf16=sft.uses_bf16("bfloat16"))
    fp32 = sft.sft_config(str(tmp_path / "fp32"), **common, bf16=sft.uses_bf16("float32"))
    assert (bf16.bf16, bf16.fp16) == (True, False)
    assert (fp32.bf16, fp32.fp16) == (False, False)
    if not torch.cuda.is_available():  # CPU-only: bf16 runs under the CPU's autocast (transformers needs use_cpu)
        assert bf16.use_cpu and not fp32.use_cpu
    # sft.train and pretrain.pretrain read it off the model: its frozen weights (the adapter trains in fp32)
    assert not sft.uses_bf16(sft.add_adapter(tiny_model(tok), sections.finetune(), seed=0))
    assert sft.uses_bf16(sft.add_adapter(tiny_model(tok).to(torch.bfloat16), sections.finetune(), seed=0))
    assert sft.uses_bf16(tiny_model(tok).to(torch.bfloat16))  # pretraining: every weight trains


@pytest.mark.slow
def test_a_bfloat16_student_finetunes_in_bf16(tok, tmp_path, monkeypatch):
    """``sft.train`` on a bfloat16 student, two optimiser steps (the first is warm-up, at lr 0): the trainer
    runs with bf16 (on a CPU-only machine under the CPU's autocast) and the adapter learns."""
    seen = {}
    original = sft.sft_config
    monkeypatch.setattr(sft, "sft_config", lambda *a, **k: seen.setdefault("config", original(*a, **k)))
    model = sft.add_adapter(tiny_model(tok).to(torch.bfloat16), sections.finetune(lora_r=2, lora_alpha=4), seed=0)
    before = {k: v.detach().clone() for k, v in model.named_parameters() if "lora_B" in k}
    history = sft.train(model, tok, sft.single_turn(toy_math.generate(8, 0), 8, seed=0), str(tmp_path),
                        sections.finetune(epochs=1, batch_size=4, lr=1e-2), seed=0)
    assert seen["config"].bf16 and any("loss" in h for h in history)
    assert any(not torch.equal(before[k], v) for k, v in model.named_parameters() if k in before)
