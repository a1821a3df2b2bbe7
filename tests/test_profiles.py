"""Profiles (profiles/*.yaml): each one validates against the schema when applied to params.yaml, holds only
values that differ from params.yaml (a value is written in one place), and switching is all-or-nothing."""

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from sml import profiles, settings

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"


@pytest.mark.parametrize("name", profiles.names())
def test_every_profile_validates_applied_to_params_yaml(name):
    text, _ = profiles.apply(name, PARAMS)
    settings.check(YAML(typ="safe").load(text))


@pytest.mark.parametrize("name", profiles.names())
def test_a_profile_holds_only_what_differs_from_params_yaml(name):
    _, changes = profiles.apply(name, PARAMS)
    assert set(changes) == set(profiles.load(name)), f"{name} repeats params.yaml's value of " \
        f"{sorted(set(profiles.load(name)) - set(changes))}: remove it from the profile"


def test_params_yaml_holds_the_embedded_default():
    cfg = settings.load(PARAMS)
    assert cfg.student.model == "models/base_student" and cfg.teacher.kind == "scripted"
    assert cfg.generation.grpo == "engine" and cfg.generation.eval == "local" and cfg.student.dtype == "float32"


def test_the_real_profile_has_the_papers_settings(tmp_path):
    copy = tmp_path / "params.yaml"
    copy.write_text(PARAMS.read_text())
    assert profiles.main(["qwen2.5-7b", "--params", str(copy), "--write"]) == 0
    real = YAML(typ="safe").load(copy.read_text())
    assert real["online_sml"]["group_size"] == 8 and real["online_sml"]["beta"] == 0
    assert (real["dialogue"]["gamma"], real["dialogue"]["train_turns"], real["dialogue"]["eval_turns"]) == (0.7, 4, 10)
    assert real["train"]["seeds"] == [0, 1, 2] and (real["tasks"]["n_train"], real["tasks"]["n_eval"]) == (2000, 500)
    assert real["student"]["model"] == real["teacher"]["model"]  # the same model teaches, with private knowledge
    assert (real["train"]["math_source"], real["train"]["code_source"]) == ("omni_math", "opencodeinstruct")
    settings.check(real)
    # written values only: everything else, comments included, is params.yaml's
    unchanged = [a for a, b in zip(PARAMS.read_text().split("\n"), copy.read_text().split("\n")) if a == b]
    assert len(unchanged) == len(PARAMS.read_text().split("\n")) - len(profiles.load("qwen2.5-7b"))


def test_a_bad_profile_is_rejected_by_key_and_nothing_is_written(tmp_path, capsys):
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "bad.yaml").write_text("online_sml.steps: 0\nstudent.dtype: fp8\n")
    (folder / "typo.yaml").write_text("online_sml.stpes: 3\n")
    with pytest.raises(ValueError) as bad:
        profiles.apply("bad", PARAMS, folder)
    assert "online_sml.steps: must be >= 1, got 0" in str(bad.value)
    assert "student.dtype: must be one of 'float32', 'bfloat16', 'float16', 'auto', got 'fp8'" in str(bad.value)
    with pytest.raises(ValueError, match=r"unknown params.yaml key\(s\) in the profile: online_sml.stpes"):
        profiles.apply("typo", PARAMS, folder)
    with pytest.raises(ValueError, match=r"profile 'nope': no .*nope.yaml \(profiles: bad, typo\)"):
        profiles.load("nope", folder)
    copy = tmp_path / "params.yaml"
    copy.write_text(PARAMS.read_text())
    assert profiles.main(["no-such-profile", "--params", str(copy), "--write"]) == 1
    assert copy.read_text() == PARAMS.read_text()
    assert "no-such-profile" in capsys.readouterr().err


@pytest.mark.parametrize("value, text", [("", '""'), ("toy_math", "toy_math"), ("http://h:8000/v1", "http://h:8000/v1"),
                                         ("0,1,2", '"0,1,2"'), ("true", '"true"'), (2e-05, "0.00002"), (0.0, "0.0"),
                                         (8, "8"), (False, "false"), ([0, 1, 2], "[0, 1, 2]")])
def test_values_are_written_so_that_yaml_reads_them_back(value, text):
    assert profiles.scalar(value) == text
    assert YAML(typ="safe").load(f"k: {text}")["k"] == value
