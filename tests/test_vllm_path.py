"""The vLLM path of online SML: import-guarded with an error naming the extra (checked before any model is
loaded), and the rollout through TRL's ``vllm_generation`` interface. vLLM itself is not installed in the
tests: the stand-in below answers ``generate`` the way TRL's ``VLLMGeneration`` does (completion ids ending
with the end-of-turn token when the turn ended), sampling with a local model."""

import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import sections

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
    with pytest.raises(ImportError, match="generation.grpo 'vllm' " + EXTRA):  # no model, no tasks: the guard comes first
        grpo.train(None, None, [], None, "unused", sections.online(), sections.dialogue(),
                   sections.generation(grpo="vllm"), seed=0, max_turns=2)


@no_vllm
def test_the_notebook_check_names_the_missing_extra(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (tmp_path / "vllm.yaml").write_text("generation.grpo: vllm\n")
    namespace = {"settings_file": str(tmp_path / "vllm.yaml"), "out_root": ".", "train_domain": "math", "seed": 0}
    with pytest.raises(ValueError, match=f"generation.grpo 'vllm' {EXTRA}"):
        settings.for_notebook(namespace, "online_sml")
    settings.for_notebook(namespace, "offline_sml")  # a stage that does not run GRPO does not need it


def test_vllm_settings_reach_the_grpo_config(tmp_path):
    vllm = grpo.vllm_settings(
        sections.generation(grpo="vllm", vllm_mode="server", vllm_server_url="http://gpu0:8000", vllm_gpu_memory=0.5),
        sections.dialogue(max_new_tokens=128, temperature=0.9, top_p=0.95))
    c = grpo.grpo_config(str(tmp_path), sections.online(tasks_per_step=1, group_size=2), seed=0, vllm=vllm)
    assert (c.use_vllm, c.vllm_mode, c.vllm_server_base_url, c.vllm_gpu_memory_utilization) == \
        (True, "server", "http://gpu0:8000", 0.5)
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
    common = dict(max_turns=3, progress=False, reuse_cache=False)
    dialogue = sections.dialogue(temperature=0.0, max_new_tokens=10)
    stand_in = StandIn(local, 10)
    through_vllm = run_dialogues(tasks, grpo.VLLMStudent(stand_in, local.tokenizer), ScriptedTeacher(), dialogue,
                                 **common)
    direct = run_dialogues(tasks, local, ScriptedTeacher(), dialogue, **common)
    assert [(d.messages, d.student_ids, d.labels) for d in through_vllm] == \
           [(d.messages, d.student_ids, d.labels) for d in direct]
    assert stand_in.calls and stand_in.calls[0] == len(tasks)  # one batched call per round


def test_the_rollout_samples_through_the_trainers_vllm(local):
    tasks = toy_math.generate(2, 2)
    stand_in = StandIn(local, 8)
    trainer = SimpleNamespace(use_vllm=True, vllm_generation=stand_in, processing_class=local.tokenizer,
                              model=local.model, accelerator=SimpleNamespace(unwrap_model=lambda m: m),
                              args=SimpleNamespace(seed=0), state=SimpleNamespace(global_step=0))
    rollout = grpo.make_rollout_func(tasks, ScriptedTeacher(), sections.dialogue(max_new_tokens=8, temperature=0.0),
                                     max_turns=2)
    out = rollout([t["prompt"] for t in tasks for _ in range(2)], trainer)
    assert len(out["completion_ids"]) == 4 and stand_in.calls[0] == 4
    assert all(len(m) == len(c) for m, c in zip(out["env_mask"], out["completion_ids"]))


def calls(code: str, name: str) -> list[str]:
    """The argument text of every call of ``name`` in ``code``."""
    found = []
    for m in re.finditer(rf"\b{re.escape(name)}\(", code):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(code[i], 0)
            i += 1
        found.append(code[m.end():i - 1])
    return found


def test_the_scale_settings_reach_every_stage_that_samples_or_trains():
    """Every stage that needs them gets where to sample and the student's dtype: GRPO rollouts
    (generation.grpo, through ``grpo.train``), every other sampling, evaluation and data collection alike
    (generation.eval, through ``load_student`` or ``rollout_student``), and the precision of every training
    stage (student.dtype: SFT and GRPO train in bf16 exactly when it is bfloat16)."""
    import nbformat
    from test_pipeline import NOTEBOOKS, reads

    code = {p.stem: "\n".join(c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code")
            for p in NOTEBOOKS}

    def passing_generation(*names):
        return {stem for stem, text in code.items()
                if any("cfg.generation" in args for name in names for args in calls(text, name))}

    assert passing_generation("load_student", "rollout_student") == \
        {"03_baseline_dialogues", "04_offline_sml", "07_q_priming", "08_evaluate"}
    assert passing_generation("grpo.train") == {"05_online_sml", "06_single_turn_baselines", "07_q_priming"}
    assert {p.stem for p in NOTEBOOKS if "student.dtype" in reads(p)} == {
        "03_baseline_dialogues", "04_offline_sml", "05_online_sml", "06_single_turn_baselines", "07_q_priming",
        "08_evaluate", "09_loss_diagnostic"}
