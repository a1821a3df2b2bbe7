"""The paper's claims next to our measurements: one row per claim, each with the differences it rests on,
their 95% intervals and a verdict, all computed from ``metrics/summary.json`` and ``metrics/diagnostic.json``
by the fixed rules below (nothing is typed in by hand).

A difference between two cells gets its interval by MOVER (Zou & Donner 2008): it recovers each
estimate's variance from its own interval (Wilson for success rates, bootstrap for behaviour rates and
losses) and treats the two as independent. For a difference of differences of the same cells (does a
gap grow with turns?) independence overstates the spread, so those intervals are conservative.

Verdict per row: *reproduced* when every comparison's interval lies on the side the paper claims,
*partial* when some do, *not reproduced* when none do, and *opposite* when none do and at least one lies
on the other side. The README carries the table (``python -m sml.evaluation.claims --readme README.md`` rewrites it;
a test keeps the two equal).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

from sml.settings import DOMAINS

BEGIN, END = "<!-- claims:begin -->", "<!-- claims:end -->"


def mover(a: float, a_ci, b: float, b_ci) -> tuple[float, float, float]:
    """``a - b`` with a 95% interval from the two estimates' own intervals (independent estimates)."""
    d = a - b
    low = d - math.sqrt((a - a_ci[0]) ** 2 + (b_ci[1] - b) ** 2)
    high = d + math.sqrt((a_ci[1] - a) ** 2 + (b - b_ci[0]) ** 2)
    return d, low, high


def cell(condition: str, train: str, evaluated: str, variant: str = "full") -> tuple[str, str]:
    return condition, f"{'none' if condition == 'base' else train}->{evaluated} {variant}"


@dataclass(frozen=True)
class Comparison:
    """``key`` of cell ``a`` minus the same of cell ``b`` (``later``: minus, for each, its value at
    ``later`` -> a gain between two turns), expected ``sign`` (+1: a above b)."""
    label: str
    a: tuple[str, str]
    b: tuple[str, str]
    key: str
    sign: int = 1
    later: str | None = None

    def value(self, metrics: dict, which) -> tuple[float, list]:
        entry = metrics[which[0]][which[1]]
        if self.later is None:
            return entry[self.key], entry[f"{self.key}_ci"]
        # the gain from key to later within one cell (e.g. SR@10 - SR@4): intervals combined as independent
        v, low, high = mover(entry[self.later], entry[f"{self.later}_ci"], entry[self.key], entry[f"{self.key}_ci"])
        return v, [low, high]

    def measure(self, metrics: dict) -> tuple[float, float, float]:
        return mover(*self.value(metrics, self.a), *self.value(metrics, self.b))


@dataclass(frozen=True)
class Claim:
    number: str
    claim: str
    paper: str
    measure: str
    comparisons: tuple[Comparison, ...]
    where: str


def _per_domain(label: str, a: str, b: str, key: str, sign: int = 1, variant: str = "full", cross=False, later=None):
    """One comparison per evaluation domain, in-domain (or trained on the other domain with ``cross``)."""
    other = {"math": "code", "code": "math"}
    return tuple(Comparison(f"{label}{'' if not label else ' '}{f'{other[d]}->{d}' if cross else d}",
                            cell(a, other[d] if cross else d, d, variant), cell(b, d, d, variant), key, sign, later)
                 for d in DOMAINS)


def _link(notebook: str, stage: str, metric: str) -> str:
    return f"[{notebook}](notebooks/{notebook}.ipynb) · `{stage}` · `{metric}`"


EVAL = _link("08_evaluate", "evaluate@<condition>", "metrics/summary.json")
CLAIMS = (
    Claim("1a", "SML teaches a student to use the conversation: it solves more with feedback than the base",
          "SR@k of SML above the base's, gains growing with k (figures; numbers not recoverable)",
          "SR@10 sml_online − base, in-domain", _per_domain("", "sml_online", "base", "sr10"), EVAL),
    Claim("1b", "Multi-turn training beats single-turn training",
          "SML above single-turn SFT / RL at every k > 1 (figures)",
          "SR@10 sml_online − st_rl and sml_offline − st_sft, in-domain",
          _per_domain("online−st_rl", "sml_online", "st_rl", "sr10")
          + _per_domain("offline−st_sft", "sml_offline", "st_sft", "sr10"), EVAL),
    Claim("1c", "... and the gap to single-turn training grows with turns",
          "the SML − single-turn gap widens from k = 1 to 10 (figures)",
          "(SR@10 − SR@1) of sml_online − the same of st_rl (conservative interval)",
          _per_domain("", "sml_online", "st_rl", "sr1", later="sr10"), EVAL),
    Claim("2", "Online SML (GRPO) beats offline SML (filtered SFT)",
          "online above offline, most on unseen problems and long dialogues (figures)",
          "SR@10 sml_online − sml_offline, in-domain", _per_domain("", "sml_online", "sml_offline", "sr10"), EVAL),
    Claim("3", "The skill transfers across domains (math -> code, code -> math)",
          "SML on math raises SR@k on code, and code on math (figures)",
          "SR@10 sml_online trained on the other domain − base",
          _per_domain("", "sml_online", "base", "sr10", cross=True), EVAL),
    Claim("4", "Trained with 4 turns, the gains carry on up to 10 turns",
          "SR@k gains over the base keep growing past k = 4 (figures)",
          "(SR@10 − SR@4) of sml_online − the same of the base: solves after the training horizon (conservative)",
          _per_domain("", "sml_online", "base", "sr4", later="sr10"), EVAL),
    Claim("5a", "On underspecified (sharded) tasks SML makes fewer premature answer attempts",
          "fewer premature attempts than the base (figure)",
          "premature rate sml_online − base, sharded, in-domain",
          _per_domain("", "sml_online", "base", "premature_rate", sign=-1, variant="sharded"), EVAL),
    Claim("5b", "... and asks for information more often",
          "more clarifying questions than the base (figure)",
          "question rate sml_online − base, sharded, in-domain",
          _per_domain("", "sml_online", "base", "question_rate", variant="sharded"), EVAL),
    Claim("5c", "Q-priming then RL strengthens this: about 5x fewer premature answers",
          "about 5x fewer premature answers than the base",
          "premature rate sml_qprime − base, sharded, in-domain",
          _per_domain("", "sml_qprime", "base", "premature_rate", sign=-1, variant="sharded"),
          _link("07_q_priming", "q_priming@<domain>-<seed>", "metrics/summary.json")),
    Claim("5d", "SML raises success on sharded tasks",
          "sharded success, base -> online SML: math 62.7 -> 69.9, code 51.5 -> 54.8 (one source)",
          "sharded SR@10 sml_online − base, in-domain",
          _per_domain("", "sml_online", "base", "sr10", variant="sharded"), EVAL),
    Claim("6", "Diagnostic: the loss on the correct answer falls across teacher turns for SML, flat for the base",
          "falling loss curves for SML, flat for the base (figure)",
          "loss drop (nats, teacher turn 1 -> 4) of sml_online − the base's, in-domain",
          _per_domain("", "sml_online", "base", "loss_drop"),
          _link("09_loss_diagnostic", "diagnostic", "metrics/diagnostic.json")),
)


def merged(summary: dict, diagnostic: dict | None = None) -> dict:
    """The summary's cells with the diagnostic's ``loss_drop`` (and its interval) added to the same cells."""
    metrics = {c: {k: dict(v) for k, v in cells.items()} for c, cells in summary.items()}
    for condition, cells in (diagnostic or {}).items():
        for name, entry in cells.items():
            target = metrics.setdefault(condition, {}).setdefault(name, {})
            target["loss_drop"], target["loss_drop_ci"] = entry["drop"], entry["drop_ci"]
    return metrics


def verdict(results: list[tuple[float, float, float]], signs: list[int]) -> str:
    held = [low > 0 if s > 0 else high < 0 for (_, low, high), s in zip(results, signs)]
    against = [high < 0 if s > 0 else low > 0 for (_, low, high), s in zip(results, signs)]
    if all(held):
        return "reproduced"
    if any(held):
        return "partial"
    return "opposite" if any(against) else "not reproduced"


def evaluate(summary: dict, diagnostic: dict | None = None) -> list[dict]:
    """Every claim with its measured comparisons (``label, value, low, high``) and verdict. A claim whose
    cells are missing from the metrics gets the verdict ``not measured``."""
    metrics, rows = merged(summary, diagnostic), []
    for claim in CLAIMS:
        try:
            results = [c.measure(metrics) for c in claim.comparisons]
        except KeyError:
            rows.append({"claim": claim, "results": [], "verdict": "not measured"})
            continue
        rows.append({"claim": claim, "results": [(c.label, *r) for c, r in zip(claim.comparisons, results)],
                     "verdict": verdict(results, [c.sign for c in claim.comparisons])})
    return rows


def _signed(v: float) -> str:
    return f"{v:+.3f}".replace("-", "−")


def markdown(summary: dict, diagnostic: dict | None = None) -> str:
    """The claims table in Markdown (between the README's claims markers)."""
    lines = ["| # | claim | paper's evidence | what we measure | ours: difference [95% CI] | verdict | where |",
             "|---|---|---|---|---|---|---|"]
    for row in evaluate(summary, diagnostic):
        claim = row["claim"]
        ours = "; ".join(f"{label}: {_signed(v)} [{_signed(lo)}, {_signed(hi)}]" for label, v, lo, hi in row["results"])
        lines.append(f"| {claim.number} | {claim.claim} | {claim.paper} | {claim.measure} | {ours or '—'} | "
                     f"**{row['verdict']}** | {claim.where} |")
    return "\n".join(lines)


def load(root: str | Path = ".") -> tuple[dict, dict | None]:
    metrics = Path(root) / "metrics"
    diagnostic = metrics / "diagnostic.json"
    return (json.loads((metrics / "summary.json").read_text()),
            json.loads(diagnostic.read_text()) if diagnostic.exists() else None)


def readme_block(text: str) -> str:
    """The claims table as the README holds it (between ``BEGIN`` and ``END``)."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"README has no claims block: add the lines {BEGIN} and {END}")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def write_readme(path: str | Path, table: str) -> None:
    path = Path(path)
    text = path.read_text()
    readme_block(text)  # the markers must be there
    head, rest = text.split(BEGIN, 1)
    path.write_text(f"{head}{BEGIN}\n{table}\n{END}{rest.split(END, 1)[1]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="folder holding metrics/ (default: the repository root)")
    parser.add_argument("--readme", help="rewrite the claims block of this README with the table")
    args = parser.parse_args()
    table = markdown(*load(args.root))
    if args.readme:
        write_readme(args.readme, table)
    print(table)
