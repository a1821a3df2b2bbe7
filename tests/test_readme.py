"""Every result number the README states in its tables comes from the committed metrics/summary.json."""

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NUMBER = r"(\d\.\d{3}) \[(\d\.\d{3}), (\d\.\d{3})\]"  # 0.099 [0.064, 0.149]
TABLES = {  # header -> (variant, the summary keys of its columns after condition and domain)
    "| condition | domain | SR@1 | SR@4 | SR@10 |": ("full", ["sr1", "sr4", "sr10"]),
    "| condition | domain | sharded SR@1 | sharded SR@10 | premature rate | question rate | attempts |":
        ("sharded", ["sr1", "sr10", "premature_rate", "question_rate", "attempts"]),
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
def test_readme_tables_match_the_summary(header):
    readme, summary = (REPO / "README.md").read_text(), json.loads((REPO / "metrics" / "summary.json").read_text())
    variant, keys = TABLES[header]
    rows = table_rows(readme, header)
    assert len(rows) >= 10, f"README table {header!r} not found or too short"
    for condition, domain, *cells in rows:
        condition = condition.strip("`")
        entry = summary[condition][f"{'none' if condition == 'base' else domain}->{domain} {variant}"]
        for key, cell in zip(keys, cells):
            where = f"README {condition} {domain} {variant} {key}"
            if key == "attempts":
                assert int(cell.replace(",", "")) == entry[key], where
                continue
            match = re.fullmatch(NUMBER, cell)
            assert match, f"{where}: {cell!r} is not 'value [low, high]'"
            ci = entry[f"{key}_ci"]
            for said, true in zip(map(float, match.groups()), [entry[key], *ci]):
                assert abs(said - true) <= 0.0005 + 1e-9, f"{where}: README says {cell}, summary {entry[key]} {ci}"
