"""Where the repository is, whether we run from the repo root (papermill, DVC) or `notebooks/` (Jupyter)."""

from pathlib import Path


def repo_root(start: str | Path = ".") -> Path:
    """The nearest directory at or above ``start`` that holds ``dvc.yaml``."""
    here = Path(start).resolve()
    for path in (here, *here.parents):
        if (path / "dvc.yaml").exists():
            return path
    raise FileNotFoundError(f"no dvc.yaml found at or above {here}: run from inside the repository")
