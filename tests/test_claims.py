"""The claims table: differences with MOVER intervals, verdicts by the stated rules, and the README's
copy equal to what the committed metric files give."""

import math
from pathlib import Path

import pytest

from sml.evaluation import claims
from sml.evaluation.transcripts import wilson

REPO = Path(__file__).resolve().parents[1]


def entry(successes, n=192, **extra):
    p = successes / n
    return {"sr1": p, "sr1_ci": list(wilson(successes, n)), "sr4": p, "sr4_ci": list(wilson(successes, n)),
            "sr10": p, "sr10_ci": list(wilson(successes, n)), **extra}


def test_mover_reduces_to_the_wald_interval_for_symmetric_intervals():
    d, low, high = claims.mover(0.5, (0.4, 0.6), 0.2, (0.17, 0.23))
    half = math.sqrt(0.1 ** 2 + 0.03 ** 2)
    assert d == pytest.approx(0.3) and low == pytest.approx(0.3 - half) and high == pytest.approx(0.3 + half)
    # asymmetric: each side takes the matching half of each interval
    d, low, high = claims.mover(0.1, (0.05, 0.2), 0.0, (0.0, 0.02))
    assert (low, high) == pytest.approx((0.1 - math.sqrt(0.05 ** 2 + 0.02 ** 2), 0.1 + 0.1))


@pytest.mark.parametrize("results, signs, expected", [
    ([(0.1, 0.05, 0.15), (0.2, 0.01, 0.3)], [1, 1], "reproduced"),
    ([(0.1, 0.05, 0.15), (0.0, -0.1, 0.1)], [1, 1], "partial"),
    ([(0.0, -0.1, 0.1), (0.0, -0.1, 0.1)], [1, 1], "not reproduced"),
    ([(-0.2, -0.3, -0.1), (0.0, -0.1, 0.1)], [1, 1], "opposite"),
    ([(-0.2, -0.3, -0.1)], [-1], "reproduced"),  # "fewer premature attempts": below zero is the claim
    ([(0.0, 0.0, 0.003)], [1], "not reproduced"),  # an interval touching zero does not count
])
def test_verdict_rules(results, signs, expected):
    assert claims.verdict(results, signs) == expected


def synthetic_summary(trained_successes):
    summary = {"base": {f"none->{d} {v}": entry(20, premature_rate=0.3, premature_rate_ci=[0.25, 0.35],
                                                question_rate=0.0, question_rate_ci=[0.0, 0.0])
                        for d in ("math", "code") for v in ("full", "sharded")}}
    for condition in ("sml_offline", "st_sft", "sml_online", "st_rl", "sml_qprime"):
        summary[condition] = {f"{t}->{e} {v}": entry(trained_successes, premature_rate=0.05, premature_rate_ci=[0.03, 0.07],
                                                      question_rate=0.2, question_rate_ci=[0.15, 0.25])
                              for t in ("math", "code") for e in ("math", "code") for v in ("full", "sharded")}
    return summary


def test_a_clearly_better_student_reproduces_the_base_comparisons():
    rows = {r["claim"].number: r for r in claims.evaluate(synthetic_summary(100))}
    assert rows["1a"]["verdict"] == rows["3"]["verdict"] == rows["5d"]["verdict"] == "reproduced"
    assert rows["5a"]["verdict"] == rows["5b"]["verdict"] == rows["5c"]["verdict"] == "reproduced"
    assert rows["1b"]["verdict"] == rows["2"]["verdict"] == "not reproduced"  # trained conditions tie each other
    assert rows["6"]["verdict"] == "not measured"  # no diagnostic given
    label, value, low, high = rows["1a"]["results"][0]
    assert label == "math" and value == pytest.approx(80 / 192) and low > 0
    diagnostic = {"base": {f"none->{d} full": {"drop": 0.0, "drop_ci": [-0.1, 0.1]} for d in ("math", "code")},
                  "sml_online": {f"{d}->{d} full": {"drop": 0.5, "drop_ci": [0.3, 0.7]} for d in ("math", "code")}}
    rows = {r["claim"].number: r for r in claims.evaluate(synthetic_summary(100), diagnostic)}
    assert rows["6"]["verdict"] == "reproduced"


def test_a_worse_student_is_reported_as_the_opposite():
    rows = {r["claim"].number: r for r in claims.evaluate(synthetic_summary(2))}
    assert rows["1a"]["verdict"] == "opposite"
    table = claims.markdown(synthetic_summary(2))
    assert table.count("\n") == len(claims.CLAIMS) + 1 and "**opposite**" in table and "−0.094" in table


def test_readme_claims_block_matches_the_committed_metrics():
    readme = (REPO / "README.md").read_text()
    assert claims.readme_block(readme) == claims.markdown(*claims.load(REPO)), \
        "README claims table is stale: run `PYTHONPATH=src python -m sml.evaluation.claims --readme README.md`"


def test_write_readme_replaces_only_the_block(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(f"# title\n\n{claims.BEGIN}\nold\n{claims.END}\n\nafter\n")
    claims.write_readme(path, "| new |")
    assert path.read_text() == f"# title\n\n{claims.BEGIN}\n| new |\n{claims.END}\n\nafter\n"
    path.write_text("no markers")
    with pytest.raises(ValueError, match="claims block"):
        claims.write_readme(path, "| new |")
