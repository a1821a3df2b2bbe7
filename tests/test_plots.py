"""The notebooks' figure helpers (sml.evaluation.plots) and where their models and settings come from (sml.paths)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402

from sml import paths  # noqa: E402
from sml.evaluation import plots  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def curve(condition="base", domain="math", shift=0.0):
    return pd.DataFrame({"condition": condition, "eval_domain": domain, "turn": [1, 2, 3],
                         "success": [0.1 + shift, 0.3 + shift, 0.4 + shift], "ci_low": [0.0, 0.1, 0.2],
                         "ci_high": [0.3, 0.5, 0.6]})


def band_limits(collection):
    y = np.concatenate([p.vertices[:, 1] for p in collection.get_paths()])
    return y.min(), y.max()


def test_band_draws_the_curve_and_its_interval():
    fig, ax = plt.subplots()
    data = curve()
    plots.band(ax, data, label="base")
    (line,), (fill,) = ax.lines, ax.collections
    assert list(line.get_xdata()) == [1, 2, 3] and list(line.get_ydata()) == pytest.approx([0.1, 0.3, 0.4])
    assert line.get_marker() == "o" and line.get_label() == "base"
    assert band_limits(fill) == pytest.approx((0.0, 0.6)) and fill.get_alpha() == 0.2
    # no colour given: line and band both take the first colour of the cycle, as plain matplotlib does
    assert to_rgba(line.get_color()) == to_rgba("C0") and tuple(fill.get_facecolor()[0][:3]) == to_rgba("C0")[:3]
    plots.band(ax, data.assign(success=0.5), y="success", color="red", alpha=0.1, ms=3)
    assert to_rgba(ax.lines[1].get_color()) == to_rgba("red") and ax.lines[1].get_markersize() == 3
    second = ax.collections[1]
    assert tuple(second.get_facecolor()[0][:3]) == to_rgba("red")[:3] and second.get_alpha() == 0.1
    plt.close(fig)


def test_curve_panels_one_panel_per_domain_in_order(tmp_path):
    rows = pd.concat([curve("base", "math"), curve("sml_online", "math", 0.2), curve("base", "code")])
    seen = []
    fig, axes = plots.curve_panels(rows, order=["base", "sml_online", "st_rl"], title="SR@k: {panel}",
                                   xticks=[1, 2, 3], colors={"base": "black", "sml_online": "blue", "st_rl": "red"},
                                   decorate=lambda ax, panel: seen.append((panel, len(ax.lines))), figsize=(6, 3))
    assert [ax.get_title() for ax in axes] == ["SR@k: math", "SR@k: code"]
    assert [[line.get_label() for line in ax.lines] for ax in axes] == [["base", "sml_online"], ["base"]]
    assert seen == [("math", 2), ("code", 1)]  # drawn after each panel's curves
    assert list(axes[0].lines[1].get_ydata()) == pytest.approx([0.3, 0.5, 0.6])
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["base", "sml_online"]
    assert axes[1].get_legend() is None and list(axes[0].get_xticks()) == [1, 2, 3]
    path = plots.save(fig, tmp_path, "curves.png")
    assert path == tmp_path / "reports" / "figures" / "curves.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plt.close(fig)
    fig, axes = plots.curve_panels(rows, order=["base", "st_rl"], skip_empty=False)  # an empty curve keeps its entry
    assert [line.get_label() for line in axes[0].lines] == ["base", "st_rl"] and len(axes[0].lines[1].get_xdata()) == 0
    plt.close(fig)


def test_the_same_figure_saves_to_the_same_bytes(tmp_path):
    def draw(name):
        fig, _ = plots.curve_panels(pd.concat([curve(), curve(domain="code")]), order=["base"], figsize=(6, 3))
        path = plots.save(fig, tmp_path, name)
        plt.close(fig)
        return path.read_bytes()

    assert draw("a.png") == draw("b.png")


def test_bar_panels_group_side_by_side_with_whiskers():
    table = pd.DataFrame([
        {"metric": "premature rate", "who": "base", "where": "on math", "value": 0.5, "low": 0.3, "high": 0.7},
        {"metric": "premature rate", "who": "base", "where": "on code", "value": 0.2, "low": 0.1, "high": 0.4},
        {"metric": "premature rate", "who": "sml", "where": "on math", "value": 0.8, "low": 0.6, "high": 0.9},
        {"metric": "question rate", "who": "base", "where": "on math", "value": 0.0, "low": 0.0, "high": 0.1}])
    fig, axes = plots.bar_panels(table, ["premature rate", "question rate"], group="who", groups=["base", "sml"],
                                 place="where", places=["on math", "on code"], style=dict(ylim=(0, 1)), figsize=(8, 3))
    assert [ax.get_title() for ax in axes] == ["sharded tasks: premature rate", "sharded tasks: question rate"]
    assert axes[0].get_ylabel() == "premature rate" and axes[0].get_ylim() == (0, 1)
    base, sml = [c for c in axes[0].containers if isinstance(c, BarContainer)]
    assert [b.get_height() for b in base] == pytest.approx([0.5, 0.2])
    assert sml[0].get_height() == pytest.approx(0.8) and np.isnan(sml[1].get_height())  # no row: an empty bar
    centres = [[b.get_x() + b.get_width() / 2 for b in bars] for bars in (base, sml)]
    assert centres == [pytest.approx([0.0, 1.0]), pytest.approx([0.4, 1.4])]  # 0.4 wide, side by side
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["on math", "on code"]
    assert list(axes[0].get_xticks()) == pytest.approx([0.2, 1.2])  # under each pair
    whisker = base.errorbar.lines[2][0].get_segments()[0]  # the first bar's whisker spans its interval
    assert whisker[:, 1] == pytest.approx([0.3, 0.7])
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["base", "sml"] and axes[1].get_legend() is None
    plt.close(fig)


def test_model_path_prefers_a_path_under_out_root(tmp_path):
    (tmp_path / "models" / "base_student").mkdir(parents=True)
    assert paths.model_path(tmp_path, "models/base_student") == tmp_path / "models" / "base_student"
    assert paths.model_path(str(tmp_path), "models/base_student") == tmp_path / "models" / "base_student"
    assert paths.model_path(tmp_path, "Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"  # an HF id
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert paths.model_path(tmp_path / "run", str(elsewhere)) == elsewhere  # an absolute local path stays itself
    assert paths.model_path(tmp_path / "run", "models/base_student") == "models/base_student"  # not there: as given


def test_figures_dir_is_created(tmp_path):
    assert plots.figures_dir(Path(tmp_path) / "run") == tmp_path / "run" / "reports" / "figures"
    assert (tmp_path / "run" / "reports" / "figures").is_dir()
