"""What the report notebook (10) reads and tabulates: success curves with intervals, gains over the base,
sharded-task rates, training curves, and transcripts picked for the gallery (and printed, here and in the
notebooks that show examples). The figures are drawn by ``sml.evaluation.plots``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sml.evaluation import transcripts
from sml.evaluation.claims import mover
from sml.evaluation.collect import pooled

ORDER = ("base", "st_sft", "sml_offline", "st_rl", "sml_online", "sml_qprime")  # the figures' legend order
CELL = ["condition", "train_domain", "eval_domain", "variant"]


def sr_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """``metrics/eval.csv`` rows -> one SR@k curve per cell, seeds pooled, with 95% Wilson intervals:
    ``condition, train_domain, eval_domain, variant, turn, success, ci_low, ci_high, n``."""
    frames = [pooled(cell).assign(**dict(zip(CELL, key))) for key, cell in rows.groupby(CELL)]
    curves = pd.concat(frames, ignore_index=True)
    return curves[CELL + ["turn", "success", "ci_low", "ci_high", "n"]]


def in_domain(curves: pd.DataFrame) -> pd.DataFrame:
    """The cells trained and evaluated on the same domain (the base, trained on none, counts as in-domain)."""
    return curves[(curves["train_domain"] == curves["eval_domain"]) | (curves["condition"] == "base")]


def gains_over_base(curves: pd.DataFrame) -> pd.DataFrame:
    """Each trained cell's SR@k minus the base's on the same evaluation domain and variant, per turn, with a
    95% MOVER interval: ``..., turn, gain, ci_low, ci_high``."""
    base = curves[curves["condition"] == "base"].set_index(["eval_domain", "variant", "turn"])
    rows = []
    for row in curves[curves["condition"] != "base"].itertuples(index=False):
        ref = base.loc[(row.eval_domain, row.variant, row.turn)]
        gain, low, high = mover(row.success, (row.ci_low, row.ci_high), ref["success"], (ref["ci_low"], ref["ci_high"]))
        rows.append({**{k: getattr(row, k) for k in CELL}, "turn": row.turn, "gain": gain, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def rate_rows(intervals: pd.DataFrame, rates=("premature", "question")) -> pd.DataFrame:
    """Interval rows (one per cell, with ``<rate>_rate, <rate>_low, <rate>_high`` columns, as in
    ``metrics/parts/intervals``) -> one row per cell and rate, in long form for ``plots.bar_panels``:
    the cell's columns, then ``metric`` ("<rate> rate"), ``value``, ``low``, ``high``."""
    return pd.concat([intervals.assign(metric=f"{rate} rate", value=intervals[f"{rate}_rate"],
                                       low=intervals[f"{rate}_low"], high=intervals[f"{rate}_high"])
                      for rate in rates], ignore_index=True)


# the direct measure of learning from feedback: (label, rate, its short name in the interval columns)
FEEDBACK_USE = (("feedback uptake", "feedback_uptake_rate", "feedback_uptake"),
                ("solve rate after feedback", "solve_rate_after_feedback", "solve_after_feedback"),
                ("solve rate after a fresh retry", "solve_rate_after_retry", "solve_after_retry"))


def feedback_rows(intervals: pd.DataFrame) -> pd.DataFrame:
    """``rate_rows`` for ``FEEDBACK_USE``, over the full-variant cells (the retry comparator runs on them only)."""
    full = intervals[intervals["variant"] == "full"]
    return pd.concat([full.assign(metric=label, value=full[rate], low=full[f"{short}_low"], high=full[f"{short}_high"])
                      for label, rate, short in FEEDBACK_USE], ignore_index=True)


SHARDED_METRICS = (("premature rate", "premature_rate"), ("question rate", "question_rate"), ("sharded SR@10", "sr10"))


def cell_rates(summary: dict, conditions, variant: str, metrics, domains=("math", "code")) -> pd.DataFrame:
    """The in-domain ``variant`` cells of ``metrics/summary.json`` in long form: ``condition, domain, metric,
    value, low, high`` for each ``(label, key)`` of ``metrics`` the cell has (the base: its ``none-><domain>``
    cell)."""
    rows = []
    for condition in conditions:
        for domain in domains:
            entry = summary.get(condition, {}).get(f"{'none' if condition == 'base' else domain}->{domain} {variant}")
            if entry is None:
                continue
            for metric, key in metrics:
                if key in entry:
                    rows.append({"condition": condition, "domain": domain, "metric": metric, "value": entry[key],
                                 "low": entry[f"{key}_ci"][0], "high": entry[f"{key}_ci"][1]})
    return pd.DataFrame(rows)


def sharded_rates(summary: dict, conditions, domains=("math", "code")) -> pd.DataFrame:
    """``cell_rates`` of the sharded cells: premature rate, question rate, sharded SR@10."""
    return cell_rates(summary, conditions, "sharded", SHARDED_METRICS, domains)


def feedback_rates(summary: dict, conditions, domains=("math", "code")) -> pd.DataFrame:
    """``cell_rates`` of the full cells: uptake, and the solve rates after feedback and after a fresh retry (a
    student learns from feedback exactly when the second beats the third)."""
    return cell_rates(summary, conditions, "full", [(label, rate) for label, rate, _ in FEEDBACK_USE], domains)


def training_curves(metrics_root: str | Path, conditions, name: str) -> pd.DataFrame:
    """The dvclive curve ``name`` (e.g. ``reward`` or ``loss``) of every training run of ``conditions`` found
    under ``metrics_root/train``: ``condition, domain, seed, step, value``."""
    frames = []
    for condition in conditions:
        for path in sorted((Path(metrics_root) / "train" / condition).glob(f"*_s*/plots/metrics/{name}.tsv")):
            domain, seed = path.parents[2].name.rsplit("_s", 1)
            table = pd.read_csv(path, sep="\t")
            frames.append(pd.DataFrame({"condition": condition, "domain": domain, "seed": int(seed),
                                        "step": table["step"], "value": table[name]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["condition", "domain", "seed", "step", "value"])


def transcript_path(root: str | Path, condition: str, train_domain: str, eval_domain: str, variant: str,
                    seed: int) -> Path:
    """Where the evaluating stages saved a cell's transcripts (03 for the base, 08 for the rest)."""
    folder = Path(root) / "data" / "transcripts" / condition
    if condition == "base":
        return folder / f"{eval_domain}_{variant}_s{seed}"
    return folder / f"{train_domain}_s{seed}" / f"{eval_domain}_{variant}"


def _attempts(record) -> list[str]:
    turns = [m["content"].strip() for m in record["messages"] if m["role"] == "assistant"]
    return [t for t, label in zip(turns, record["labels"]) if label == "attempt"]


def used_feedback(record) -> bool:
    """Solved after at least one wrong attempt: the feedback on it was put to use."""
    return record["solved_turn"] > 1 and any(label == "attempt" for label in record["labels"][:record["solved_turn"] - 1])


def ignored_feedback(record) -> bool:
    """Never solved, and gave the same wrong answer again after being told it was wrong."""
    attempts = _attempts(record)
    return not record["solved_turn"] and len(attempts) > len(set(attempts))


def gallery(data, per_kind: int = 1) -> list[tuple[str, dict]]:
    """Up to ``per_kind`` dialogues of ``data`` where the student used feedback, and as many where it
    ignored it (first ones in order, so the pick is deterministic)."""
    picked = []
    for kind, test in (("used feedback", used_feedback), ("ignored feedback", ignored_feedback)):
        picked += [(kind, r) for r in [r for r in data if test(r)][:per_kind]]
    return picked


def as_text(record, width: int | None = 400) -> str:
    """A dialogue as plain text, each student turn with its label, ``correct`` on the answer that solved
    it and, in Q-priming data, where an injected question came from (long turns cut at ``width``; None:
    never cut)."""
    status = f"solved at turn {record['solved_turn']}" if record["solved_turn"] else "not solved"
    lines = [f"--- {record['id']} ({record['variant']}), {status}"]
    tags = iter(zip(record["labels"], record["correct"], record.get("injected") or [""] * len(record["labels"])))
    for message in record["messages"]:
        text = message["content"]
        if width is not None and len(text) > width:
            text = text[:width] + " ..."
        if message["role"] == "user":
            lines.append(f"TEACHER: {text}")
        else:
            label, ok, how = next(tags)
            lines.append(f"STUDENT [{label}{', correct' if ok else ''}{', injected: ' + how if how else ''}]: {text}")
    return "\n".join(lines)


def load_cell(root, condition, train_domain, eval_domain, variant, seed):
    """A cell's saved evaluation transcripts (see :func:`transcript_path`)."""
    return transcripts.load(transcript_path(root, condition, train_domain, eval_domain, variant, seed))
