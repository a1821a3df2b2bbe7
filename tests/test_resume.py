"""Resumable work: dialogues written chunk by chunk and read back after an interrupt, trainer checkpoints
that continue exactly where a run stopped, and work folders that never resume stale work."""

import datasets
import pytest
import sections
import torch
from transformers import TrainerCallback

from sml.train import grpo, sft
from sml import resume
from sml.evaluation import transcripts
from sml.dialogue.engine import run_dialogues
from sml.dialogue.student import Student
from sml.tasks import toy_math
from sml.dialogue.teacher import ScriptedTeacher
from tiny_models import tiny_model, tiny_tokenizer
from failing_teacher import FailingTeacher

ENGINE = dict(max_turns=3, progress=False)
DIALOGUE = sections.dialogue(gamma=0.7, max_new_tokens=12, temperature=1.5)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def student(tok):
    return Student(tiny_model(tok), tok)



def test_one_chunk_is_exactly_an_unchunked_run(student):
    tasks = toy_math.generate(6, 0)
    plain = transcripts.to_dataset(run_dialogues(tasks, student, ScriptedTeacher(), DIALOGUE, seed=5, **ENGINE), 0.7)
    assert resume.dialogues(tasks, student, ScriptedTeacher(), DIALOGUE, seed=5, **ENGINE).to_list() == plain.to_list()


def test_interrupted_dialogues_resume_without_loss_or_repeats(student, tmp_path, monkeypatch):
    tasks = toy_math.generate(8, 1)
    whole = resume.dialogues(tasks, student, ScriptedTeacher(), DIALOGUE, seed=3, chunk_tasks=3, **ENGINE)
    # Each chunk asks the teacher once per turn but the last: 2 batches. Fail in the third chunk.
    with pytest.raises(RuntimeError, match=r"chunk 3 of 3.*the first 2 chunk\(s\) are kept in .*run again to resume"):
        resume.dialogues(tasks, student, FailingTeacher(fail_after=4), DIALOGUE, seed=3, chunk_tasks=3, folder=tmp_path, **ENGINE)
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["chunk-00000.jsonl", "chunk-00001.jsonl"]  # finished chunks only, no half-written file

    simulated = []
    real = resume.run_groups
    monkeypatch.setattr(resume, "run_groups",
                        lambda chunks, *a, **k: simulated.extend(len(c.tasks) for c in chunks) or real(chunks, *a, **k))
    again = resume.dialogues(tasks, student, ScriptedTeacher(), DIALOGUE, seed=3, chunk_tasks=3, folder=tmp_path,
                             **ENGINE)
    assert simulated == [2]  # only the missing last chunk (8 = 3 + 3 + 2 tasks) ran again
    assert again.to_list() == whole.to_list()  # nothing lost, nothing twice, same dialogues
    assert len(set(again["id"])) == len(tasks)


def test_chunks_sample_with_their_own_seeds():
    seeds = {resume.chunk_seed(s, k) for s in range(3) for k in range(50)}
    assert len(seeds) == 150 and resume.chunk_seed(7, 0) == 7


def test_work_folders_are_keyed_by_settings_and_input_files(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"1234")
    first = resume.work_dir(tmp_path / "out", "08_evaluate_x", {"n_tasks": 8}, [model])
    (first / "chunk-00000.jsonl").write_text("{}\n")
    assert resume.work_dir(tmp_path / "out", "08_evaluate_x", {"n_tasks": 8}, [model]) == first
    assert (first / "chunk-00000.jsonl").exists()  # same settings and inputs: the work is resumed
    (model / "weights.bin").write_bytes(b"4321")  # same size, other content
    changed = resume.work_dir(tmp_path / "out", "08_evaluate_x", {"n_tasks": 8}, [model])
    assert changed != first and not first.exists()  # stale work is dropped, never resumed
    assert resume.work_dir(tmp_path / "out", "08_evaluate_x", {"n_tasks": 9}, [model]).name != changed.name
    other_stage = resume.work_dir(tmp_path / "out", "08_evaluate_y", {"n_tasks": 9}, [model])
    resume.finish(other_stage)
    assert not other_stage.parent.exists() and (tmp_path / "out" / resume.WORK / "08_evaluate_x").exists()


def test_bad_resume_settings_are_named():
    with pytest.raises(ValueError, match="resume.checkpoint_steps"):
        resume.checkpointing(-1)


class Interrupt(TrainerCallback):
    """Stops the process's training at ``step`` (after that step's checkpoint), like a kill."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


class Recorder(TrainerCallback):
    """A logger: the steps whose logs it received."""

    def __init__(self):
        self.steps = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "loss" in logs:
            self.steps.append(round(logs["epoch"], 4))


def lora_state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def assert_same_weights(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sft_resumes_from_its_checkpoint_exactly(tok, tmp_path):
    data = sft.single_turn(toy_math.generate(12, 0), 12, seed=0)  # 6 steps of 4 over 2 epochs
    finetune = sections.finetune(epochs=2, batch_size=4, lr=3e-3)

    def run(folder, *callbacks):
        model = sft.add_adapter(tiny_model(tok), sections.finetune(lora_r=4, lora_alpha=8), seed=0)
        log = Recorder()
        try:
            history = sft.train(model, tok, data, str(folder), finetune, seed=0, callbacks=[log, *callbacks],
                                checkpoint_steps=2)
        except KeyboardInterrupt:
            return None, None, log
        return lora_state(model), [h["loss"] for h in history if "loss" in h], log

    weights, losses, log = run(tmp_path / "straight")
    assert run(tmp_path / "resumed", Interrupt(3))[0] is None
    assert resume.last_checkpoint(tmp_path / "resumed").endswith("checkpoint-2")
    resumed, resumed_losses, resumed_log = run(tmp_path / "resumed")
    assert_same_weights(resumed, weights)
    assert resumed_losses == losses and len(losses) == 6
    assert resumed_log.steps == log.steps  # the checkpoint's log is replayed: a logger sees every step once


def test_grpo_resumes_from_its_checkpoint_exactly(tok, tmp_path, monkeypatch):
    # A random model never solves a task, so every reward would be 0 and nothing would train: score the
    # conversations by their tokens instead.
    monkeypatch.setattr(grpo, "conversation_reward",
                        lambda completions, completion_ids, **kw: [float(sum(c) % 5) for c in completion_ids])
    tasks = toy_math.generate(6, 2)
    online = sections.online(steps=3, tasks_per_step=1, group_size=2, lr=5e-2)
    dialogue = sections.dialogue(gamma=0.7, max_new_tokens=8, temperature=1.5)

    def run(folder, *callbacks):
        model = sft.add_adapter(tiny_model(tok), sections.finetune(lora_r=4, lora_alpha=8), seed=0)
        try:
            history = grpo.train(model, tok, tasks, ScriptedTeacher(), str(folder), online, dialogue,
                                 sections.generation(), seed=0, max_turns=2, callbacks=list(callbacks),
                                 checkpoint_steps=1)
        except KeyboardInterrupt:
            return None, None
        return lora_state(model), [(h["step"], h["loss"], h["num_tokens"]) for h in history if "loss" in h]

    weights, log = run(tmp_path / "straight")
    initial = lora_state(sft.add_adapter(tiny_model(tok), sections.finetune(lora_r=4, lora_alpha=8), seed=0))
    assert any(not torch.equal(weights[k], initial[k]) for k in weights)  # it did train
    assert run(tmp_path / "resumed", Interrupt(2))[0] is None
    resumed, resumed_log = run(tmp_path / "resumed")
    assert_same_weights(resumed, weights)
    assert resumed_log == log and len(log) == 3  # the same rollouts (token counts) and losses at every step


def test_a_checkpoint_cut_short_is_skipped(tmp_path):
    for step, state in ((2, '{"global_step": 2}'), (4, '{"global_step": 4}'), (6, '{"global_st')):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-8").mkdir()  # killed before its state was written
    assert resume.last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert resume.last_checkpoint(tmp_path / "none") is None


def test_without_checkpoint_steps_nothing_is_saved(tok, tmp_path):
    data = datasets.Dataset.from_list(sft.single_turn(toy_math.generate(4, 0), 4, seed=0).to_list())
    model = sft.add_adapter(tiny_model(tok), sections.finetune(lora_r=2, lora_alpha=4), seed=0)
    sft.train(model, tok, data, str(tmp_path / "run"), sections.finetune(batch_size=2), seed=0)
    assert resume.last_checkpoint(tmp_path / "run") is None
