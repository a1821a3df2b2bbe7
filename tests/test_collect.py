"""Gathering the stages' metric parts into the contract files and the summary."""

import json

import pandas as pd
import pytest

from sml.evaluation import collect, transcripts


def eval_part(condition, train_domain, seeds, successes, n=10, eval_domain="math"):
    rows = [{"condition": condition, "train_domain": train_domain, "eval_domain": eval_domain, "variant": "full",
             "seed": seed, "turn": turn, "success": s, "n": n}
            for seed, curve in zip(seeds, successes) for turn, s in enumerate(curve, start=1)]
    return pd.DataFrame(rows)


def behaviour_part(condition, train_domain, seeds, eval_domain="math"):
    return pd.DataFrame([{"condition": condition, "train_domain": train_domain, "eval_domain": eval_domain,
                          "variant": "full", "seed": s, "premature_rate": 0.0, "question_rate": 0.1,
                          "mean_turns_to_solve": 2.0, "leak_rate": 0.0, "well_formed_rate": 1.0,
                          "feedback_uptake_rate": 0.5, "solve_rate_after_feedback": 0.2,
                          "solve_rate_after_retry": 0.1} for s in seeds])


def write_parts(root, name, evals, behaviour):
    transcripts.write_csv(root / "metrics" / "parts" / "eval" / f"{name}.csv", evals, transcripts.EVAL_COLUMNS)
    transcripts.write_csv(root / "metrics" / "parts" / "behaviour" / f"{name}.csv", behaviour,
                          transcripts.BEHAVIOUR_COLUMNS)


def test_collect_concatenates_parts_and_summarises_with_pooled_intervals(tmp_path):
    curves = [[0.1 * k for k in range(1, 11)], [0.0] * 10]
    write_parts(tmp_path, "base", eval_part("base", "none", [0, 1], curves), behaviour_part("base", "none", [0, 1]))
    write_parts(tmp_path, "sml_offline", eval_part("sml_offline", "math", [0], [[0.5] * 10]),
                behaviour_part("sml_offline", "math", [0]))
    summary = collect.collect(tmp_path)
    evals = pd.read_csv(tmp_path / "metrics" / "eval.csv")
    assert list(evals.columns) == transcripts.EVAL_COLUMNS and len(evals) == 30
    behaviour = pd.read_csv(tmp_path / "metrics" / "behaviour.csv")
    assert list(behaviour.columns) == transcripts.BEHAVIOUR_COLUMNS and len(behaviour) == 3
    assert list(behaviour.columns[-4:]) == ["well_formed_rate", "feedback_uptake_rate", "solve_rate_after_feedback",
                                            "solve_rate_after_retry"]
    base = summary["base"]["none->math full"]
    assert base["sr1"] == pytest.approx(0.05) and base["sr4"] == pytest.approx(0.2) and base["sr10"] == pytest.approx(0.5)
    assert base["sr4_ci"] == [round(x, 4) for x in transcripts.wilson(4, 20)]  # 4 of the 20 pooled dialogues
    assert base["n"] == 20 and base["seeds"] == 2
    assert json.loads((tmp_path / "metrics" / "summary.json").read_text()) == summary


def test_two_parts_with_the_same_cell_are_refused(tmp_path):
    write_parts(tmp_path, "a", eval_part("base", "none", [0], [[0.1] * 3]), behaviour_part("base", "none", [0]))
    write_parts(tmp_path, "b", eval_part("base", "none", [0], [[0.2] * 3]), behaviour_part("base", "none", [1]))
    with pytest.raises(ValueError, match="same cell"):
        collect.collect(tmp_path)


def test_missing_or_malformed_parts_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metric parts"):
        collect.collect(tmp_path)
    folder = tmp_path / "metrics" / "parts" / "eval"
    folder.mkdir(parents=True)
    pd.DataFrame([{"condition": "base", "turn": 1}]).to_csv(folder / "bad.csv", index=False)
    with pytest.raises(ValueError, match="bad.csv"):
        collect.read_parts(folder, transcripts.EVAL_COLUMNS)
