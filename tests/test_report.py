"""The report's tables: pooled success curves, gains over the base, training curves, and the gallery's picks."""

import pandas as pd
import pytest

from sml.evaluation import report
from sml.evaluation.transcripts import wilson


def eval_rows():
    rows = []
    for condition, train, hits in (("base", "none", (1, 2)), ("sml_online", "math", (3, 4))):
        for seed, k in enumerate(hits):  # 10 tasks per seed; k solved at turn 1, one more at turn 2
            rows += [{"condition": condition, "train_domain": train, "eval_domain": "math", "variant": "full",
                      "seed": seed, "turn": t, "success": (k + t - 1) / 10, "n": 10} for t in (1, 2)]
    return pd.DataFrame(rows)


def test_sr_curves_pool_the_seeds_with_wilson_intervals():
    curves = report.sr_curves(eval_rows())
    online = curves[curves["condition"] == "sml_online"].set_index("turn")
    assert online.loc[1, "success"] == pytest.approx(0.35) and online.loc[1, "n"] == 20
    assert (online.loc[1, "ci_low"], online.loc[1, "ci_high"]) == pytest.approx(wilson(7, 20))
    gains = report.gains_over_base(curves).set_index("turn")
    assert gains.loc[1, "gain"] == pytest.approx(0.35 - 0.15) and gains.loc[2, "gain"] == pytest.approx(0.2)
    assert (gains["ci_low"] < gains["gain"]).all() and (gains["gain"] < gains["ci_high"]).all()


def record(answers, solved_turn):
    messages, labels = [{"role": "user", "content": "Calculate 2 + 2."}], []
    for answer in answers:
        messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": "That is not right."}]
        labels.append("question" if answer.endswith("?") else "attempt")
    return {"id": "t#0", "variant": "full", "messages": messages, "labels": labels,
            "correct": [k + 1 == solved_turn for k in range(len(answers))], "solved_turn": solved_turn}


def test_gallery_picks_used_and_ignored_feedback():
    used = record(["The answer is 5.", "The answer is 4."], 2)
    ignored = record(["The answer is 5.", "The answer is 5."], 0)
    first_try = record(["The answer is 4."], 1)
    asked = record(["What is step 1?", "The answer is 4."], 2)  # no wrong attempt: nothing to use
    assert [report.used_feedback(r) for r in (used, ignored, first_try, asked)] == [True, False, False, False]
    assert [report.ignored_feedback(r) for r in (used, ignored, first_try, asked)] == [False, True, False, False]
    assert report.gallery([first_try, used, ignored, used], per_kind=1) == [("used feedback", used),
                                                                              ("ignored feedback", ignored)]
    text = report.as_text(used)
    assert "solved at turn 2" in text and "STUDENT [attempt, correct]: The answer is 4." in text


def test_training_curves_read_every_run(tmp_path):
    for seed in (0, 1):
        folder = tmp_path / "train" / "sml_online" / f"math_s{seed}" / "plots" / "metrics"
        folder.mkdir(parents=True)
        (folder / "reward.tsv").write_text(f"step\treward\n0\t0.{seed}\n1\t0.5\n")
    curves = report.training_curves(tmp_path, ["sml_online", "st_rl"], "reward")
    assert sorted(curves["seed"].unique()) == [0, 1] and set(curves["domain"]) == {"math"}
    assert curves[curves["seed"] == 1]["value"].tolist() == [0.1, 0.5]
    assert report.training_curves(tmp_path, ["st_rl"], "reward").empty


def test_transcript_paths_follow_the_evaluating_stages(tmp_path):
    assert report.transcript_path(tmp_path, "base", "none", "code", "full", 2) == \
        tmp_path / "data" / "transcripts" / "base" / "code_full_s2"
    assert report.transcript_path(tmp_path, "st_rl", "math", "code", "sharded", 1) == \
        tmp_path / "data" / "transcripts" / "st_rl" / "math_s1" / "code_sharded"


def test_as_text_marks_injected_questions_and_can_keep_long_turns():
    qprimed = record(["The answer is 5.", "What is step 1?", "The answer is 4."], 3)
    qprimed["injected"] = ["", "template", ""]
    text = report.as_text(qprimed)
    assert "STUDENT [question, injected: template]: What is step 1?" in text
    assert "STUDENT [attempt, correct]: The answer is 4." in text and "STUDENT [attempt]: The answer is 5." in text
    long = record(["x" * 500], 0)
    assert report.as_text(long).endswith("x" * 400 + " ...\nTEACHER: That is not right.")
    assert "x" * 500 in report.as_text(long, width=None) and "not solved" in report.as_text(long)


def test_rate_rows_and_sharded_rates_are_long_tables():
    intervals = pd.DataFrame([{"condition": "base", "train_domain": "none", "eval_domain": "math", "variant": "sharded",
                               "premature_rate": 0.5, "premature_low": 0.3, "premature_high": 0.7,
                               "question_rate": 0.1, "question_low": 0.0, "question_high": 0.2}])
    rows = report.rate_rows(intervals)
    assert rows[["metric", "value", "low", "high"]].values.tolist() == [["premature rate", 0.5, 0.3, 0.7],
                                                                        ["question rate", 0.1, 0.0, 0.2]]
    assert (rows["condition"] == "base").all()
    summary = {"base": {"none->math sharded": {"premature_rate": 0.5, "premature_rate_ci": [0.3, 0.7],
                                               "sr10": 0.2, "sr10_ci": [0.1, 0.4]},
                        "none->math full": {"sr10": 0.9, "sr10_ci": [0.8, 1.0]}},
               "sml_online": {"math->code sharded": {"sr10": 0.3, "sr10_ci": [0.2, 0.5]},  # cross-domain: left out
                              "math->math sharded": {"question_rate": 0.25, "question_rate_ci": [0.1, 0.4]}}}
    table = report.sharded_rates(summary, ["base", "sml_online", "st_rl"])
    assert table.values.tolist() == [["base", "math", "premature rate", 0.5, 0.3, 0.7],
                                     ["base", "math", "sharded SR@10", 0.2, 0.1, 0.4],
                                     ["sml_online", "math", "question rate", 0.25, 0.1, 0.4]]
    assert report.sharded_rates({}, ["base"]).empty


def test_feedback_use_is_plotted_from_the_full_cells():
    """Uptake and the two solve rates (after feedback, after a fresh retry): from the interval parts (03, 08)
    and from the summary (the report), full cells only, each with its interval."""
    cell = {"condition": "sml_online", "train_domain": "math", "eval_domain": "math",
            "feedback_uptake_rate": 0.4, "feedback_uptake_low": 0.3, "feedback_uptake_high": 0.5,
            "solve_rate_after_feedback": 0.2, "solve_after_feedback_low": 0.1, "solve_after_feedback_high": 0.3,
            "solve_rate_after_retry": 0.1, "solve_after_retry_low": 0.05, "solve_after_retry_high": 0.2}
    intervals = pd.DataFrame([{**cell, "variant": "full"}, {**cell, "variant": "sharded"}])
    rows = report.feedback_rows(intervals)
    assert rows[["metric", "value", "low", "high"]].values.tolist() == [
        ["feedback uptake", 0.4, 0.3, 0.5], ["solve rate after feedback", 0.2, 0.1, 0.3],
        ["solve rate after a fresh retry", 0.1, 0.05, 0.2]]
    assert (rows["variant"] == "full").all()
    summary = {"base": {"none->code full": {"solve_rate_after_feedback": 0.02, "solve_rate_after_feedback_ci": [0.01, 0.04],
                                            "solve_rate_after_retry": 0.1, "solve_rate_after_retry_ci": [0.08, 0.12]},
                        "none->code sharded": {"solve_rate_after_feedback": 0.5, "solve_rate_after_feedback_ci": [0, 1]}}}
    assert report.feedback_rates(summary, ["base"]).values.tolist() == [
        ["base", "code", "solve rate after feedback", 0.02, 0.01, 0.04],
        ["base", "code", "solve rate after a fresh retry", 0.1, 0.08, 0.12]]
