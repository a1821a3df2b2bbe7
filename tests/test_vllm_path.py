"""The vLLM path of online SML: import-guarded with an error naming the extra (checked before any model is
loaded), and the rollout through TRL's ``vllm_generation`` interface. vLLM itself is not installed in the
tests: the stand-in below answers ``generate`` the way TRL's ``VLLMGeneration`` does (completion ids ending
with the end-of-turn token when the turn ended), sampling with a local model."""

import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from sml import settings
from sml.train import grpo
from sml.dialogue.engine import run_dialogues
from sml.dialogue.student import Student
from sml.tasks import toy_math
from sml.dialogue.teacher import ScriptedTeacher
from tiny_models import tiny_model, tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]

no_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
EXTRA = re.escape("needs the optional extra 'vllm': pip install -e '.[vllm]' (module 'vllm' is not installed)")


@no_vllm
def test_vllm_generation_names_the_missing_extra_before_any_work():
    with pytest.raises(ImportError, match="generation.grpo 'vllm' " + EXTRA):
        grpo.check_settings(steps=1, tasks_per_step=1, group_size=2, lr=1e-3, generation="vllm")
    with pytest.raises(ImportError, match=EXTRA):  # no model, no tasks: the guard comes first
        grpo.train(None, None, [], None, "unused", steps=1, tasks_per_step=1, group_size=2, lr=1e-3, seed=0,
                   max_turns=2, gamma=0.7, generation="vllm")


@no_vllm
def test_the_notebook_check_names_the_missing_extra(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (tmp_path / "vllm.yaml").write_text("generation.grpo: vllm\n")
    namespace = {"settings_file": str(tmp_path / "vllm.yaml"), "out_root": ".", "train_domain": "math", "seed": 0}
    with pytest.raises(ValueError, match=f"generation.grpo 'vllm' {EXTRA}"):
        settings.for_notebook(namespace, "online_sml")
    settings.for_notebook(namespace, "offline_sml")  # a stage that does not run GRPO does not need it


def test_bad_generation_settings_are_named():
    with pytest.raises(ValueError, match="generation.grpo: must be one of"):
        grpo.check_settings(steps=1, tasks_per_step=1, group_size=2, lr=1e-3, generation="sglang")
    with pytest.raises(ValueError, match="generation.vllm_mode: must be one of"):
        grpo.check_settings(steps=1, tasks_per_step=1, group_size=2, lr=1e-3, generation="vllm", vllm_mode="remote")


def test_vllm_settings_reach_the_grpo_config(tmp_path):
    settings = grpo.vllm_settings("server", "http://gpu0:8000", 0.5, max_new_tokens=128, temperature=0.9, top_p=0.95)
    c = grpo.grpo_config(str(tmp_path), steps=1, tasks_per_step=1, group_size=2, lr=1e-3, seed=0, bf16=False,
                         vllm=settings)
    assert (c.use_vllm, c.vllm_mode, c.vllm_server_base_url) == (True, "server", "http://gpu0:8000")
    assert (c.max_completion_length, c.temperature, c.top_p) == (128, 0.9, 0.95)
    assert c.vllm_importance_sampling_correction is False  # teacher tokens have no sampling log-probs


class StandIn:
    """TRL's ``VLLMGeneration.generate`` contract, answered by a local student (greedy)."""

    def __init__(self, student, max_tokens):
        self.student, self.max_tokens, self.calls = student, max_tokens, []

    def generate(self, prompts, images, num_generations):
        assert images is None and num_generations == 1
        self.calls.append(len(prompts))
        out = self.student.generate(prompts, self.max_tokens, temperature=0.0)
        return prompts, [ids + [self.student.eos_id] if ended else ids for ids, ended in out], None, None


@pytest.fixture(scope="module")
def local():
    tokenizer = tiny_tokenizer()
    return Student(tiny_model(tokenizer), tokenizer, device="cpu")


def test_vllm_student_dialogues_equal_the_local_ones(local):
    tasks = toy_math.generate(5, 1)
    common = dict(max_turns=3, temperature=0.0, max_new_tokens=10, progress=False, reuse_cache=False)
    stand_in = StandIn(local, 10)
    through_vllm = run_dialogues(tasks, grpo.VLLMStudent(stand_in, local.tokenizer), ScriptedTeacher(), **common)
    direct = run_dialogues(tasks, local, ScriptedTeacher(), **common)
    assert [(d.messages, d.student_ids, d.labels) for d in through_vllm] == \
           [(d.messages, d.student_ids, d.labels) for d in direct]
    assert stand_in.calls and stand_in.calls[0] == len(tasks)  # one batched call per round


def test_the_rollout_samples_through_the_trainers_vllm(local):
    tasks = toy_math.generate(2, 2)
    stand_in = StandIn(local, 8)
    trainer = SimpleNamespace(use_vllm=True, vllm_generation=stand_in, processing_class=local.tokenizer,
                              model=local.model, accelerator=SimpleNamespace(unwrap_model=lambda m: m),
                              args=SimpleNamespace(seed=0), state=SimpleNamespace(global_step=0))
    rollout = grpo.make_rollout_func(tasks, ScriptedTeacher(), max_turns=2, max_new_tokens=8, temperature=0.0)
    out = rollout([t["prompt"] for t in tasks for _ in range(2)], trainer)
    assert len(out["completion_ids"]) == 4 and stand_in.calls[0] == 4
    assert all(len(m) == len(c) for m, c in zip(out["env_mask"], out["completion_ids"]))


def test_the_scale_settings_reach_every_stage_that_samples_or_trains():
    """Every stage that needs them reads where to sample and the student's dtype: GRPO rollouts
    (generation.grpo), every other sampling, evaluation and data collection alike (generation.eval), and the
    precision of every training stage (student.dtype: SFT and GRPO train in bf16 exactly when it is bfloat16)."""
    from test_pipeline import NOTEBOOKS, reads

    expected = {
        "generation.eval": {"03_baseline_dialogues", "04_offline_sml", "07_q_priming", "08_evaluate"},
        "generation.grpo": {"05_online_sml", "06_single_turn_baselines", "07_q_priming"},
        "student.dtype": {"03_baseline_dialogues", "04_offline_sml", "05_online_sml", "06_single_turn_baselines",
                          "07_q_priming", "08_evaluate", "09_loss_diagnostic"},
    }
    for key, notebooks in expected.items():
        assert {p.stem for p in NOTEBOOKS if key in reads(p)} == notebooks, key
