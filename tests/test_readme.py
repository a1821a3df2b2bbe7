"""Every result number docs/results.md states in its tables comes from the committed metrics/summary.json;
the README stays short and, like the docs, points only at files a fresh clone has."""

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results.md"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NUMBER = r"(\d\.\d{3}) \[(\d\.\d{3}), (\d\.\d{3})\]"  # 0.099 [0.064, 0.149]
TABLES = {  # header -> (variant, the summary keys of its columns after condition and domain)
    "| condition | domain | SR@1 | SR@4 | SR@10 |": ("full", ["sr1", "sr4", "sr10"]),
    "| condition | domain | sharded SR@1 | sharded SR@10 | premature rate | question rate | attempts |":
        ("sharded", ["sr1", "sr10", "premature_rate", "question_rate", "attempts"]),
    "| condition | domain | well formed | feedback uptake | solve rate after feedback | after a fresh retry |":
        ("full", ["well_formed_rate", "feedback_uptake_rate", "solve_rate_after_feedback", "solve_rate_after_retry"]),
}


def table_rows(text: str, header: str) -> list[list[str]]:
    lines = text.splitlines()
    start = lines.index(header) + 2  # skip the |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("*") for cell in line.strip("|").split("|")])
    return rows


@pytest.mark.parametrize("header", TABLES)
def test_result_tables_match_the_summary(header):
    results, summary = RESULTS.read_text(), json.loads((REPO / "metrics" / "summary.json").read_text())
    variant, keys = TABLES[header]
    assert header in results.splitlines(), f"docs/results.md has no table {header!r}"
    rows = table_rows(results, header)
    assert len(rows) >= 10, f"docs/results.md table {header!r} too short"
    for condition, domain, *cells in rows:
        condition = condition.strip("`")
        entry = summary[condition][f"{'none' if condition == 'base' else domain}->{domain} {variant}"]
        for key, cell in zip(keys, cells):
            where = f"docs/results.md {condition} {domain} {variant} {key}"
            if key == "attempts":
                assert int(cell.replace(",", "")) == entry[key], where
                continue
            match = re.fullmatch(NUMBER, cell)
            assert match, f"{where}: {cell!r} is not 'value [low, high]'"
            ci = entry[f"{key}_ci"]
            for said, true in zip(map(float, match.groups()), [entry[key], *ci]):
                assert abs(said - true) <= 0.0005 + 1e-9, f"{where}: docs/results.md says {cell}, summary {entry[key]} {ci}"


def test_readme_is_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200, "README over 200 lines: move detail to docs/"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_docs_point_only_at_files_in_the_repository(doc):
    text = doc.read_text()
    assert "../shared" not in text, f"{doc.name} cites a file outside the repository"
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):  # Markdown links and images
        if "://" in target:
            continue
        assert (doc.parent / target).resolve().exists(), f"{doc.name} links to missing {target}"
