"""Where things are: the repository (whether we run from the repo root, as papermill and DVC do, or from
`notebooks/` in Jupyter), a notebook's model, and the folders named in its parameters."""

from __future__ import annotations

from pathlib import Path


def repo_root(start: str | Path = ".") -> Path:
    """The nearest directory at or above ``start`` that holds ``dvc.yaml``."""
    here = Path(start).resolve()
    for path in (here, *here.parents):
        if (path / "dvc.yaml").exists():
            return path
    raise FileNotFoundError(f"no dvc.yaml found at or above {here}: run from inside the repository")


def model_path(out_root: str | Path, model: str) -> Path | str:
    """Where a notebook's ``model`` parameter points: a path under ``out_root`` when one exists there
    (``models/base_student``, what notebook 02 writes), else ``model`` as given (an HF model id or a
    local path), unchanged."""
    under = Path(out_root) / model
    return under if under.exists() else model
