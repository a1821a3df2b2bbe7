"""Run a notebook stage on several GPUs: every process executes the notebook, only the main one keeps it.

    PYTHONPATH=src accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml -m sml.train.launch \\
        notebooks/05_online_sml.ipynb reports/notebooks/05_online_sml.ipynb -p key value ...

Arguments after ``-m sml.train.launch`` are papermill's own (parsed by papermill's CLI, so ``-p``, ``-y``, ``-r``,
``--progress-bar`` mean exactly what they mean in ``dvc.yaml``). Each kernel inherits RANK, WORLD_SIZE,
MASTER_ADDR/PORT and ACCELERATE_* from ``accelerate launch``, so the TRL trainer inside joins the process
group. Rank 0 (or no RANK: a plain run) writes the output notebook; other ranks write to a temporary file
that is deleted afterwards, so the report is written once.

    PYTHONPATH=src python -m sml.train.launch --check configs/accelerate/*.yaml

validates config files with accelerate's own loader, without GPUs or DeepSpeed installed.
"""

import os
import signal
import sys
import tempfile

import click
import yaml
from papermill.cli import papermill as papermill_cli

from sml.paths import repo_root


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0  # global rank: one report even over several machines


def output_path(given: str) -> str:
    """``given`` on the main process; elsewhere a fresh temporary notebook the caller deletes."""
    if is_main_process():
        return given
    fd, path = tempfile.mkstemp(prefix=f"sml_rank{os.environ['RANK']}_", suffix=".ipynb")
    os.close(fd)
    return path


def run(argv: list[str]) -> None:
    """Run papermill's CLI on ``argv``, with this rank's output path; exits non-zero if the notebook fails."""
    try:
        ctx = papermill_cli.make_context("sml.train.launch", list(argv))
    except click.exceptions.Exit as e:  # --help
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    params = ctx.params
    given, params["output_path"] = params["output_path"], output_path(params["output_path"])
    if params["output_path"] != given:
        params["progress_bar"] = False  # one progress bar, not one per GPU
    params["cwd"] = params["cwd"] or str(repo_root())  # notebooks resolve paths from the repo root
    try:
        with ctx:
            papermill_cli.invoke(ctx)  # a failing cell raises PapermillExecutionError: exit status 1
    finally:
        if params["output_path"] != given:
            os.unlink(params["output_path"])


def check_config(path: str) -> dict:
    """Load an accelerate config as ``accelerate launch`` would; ValueError naming the file if it cannot."""
    # imported here: accelerate pulls in torch, which running a notebook does not need
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    try:
        config = load_config_from_file(str(path)).to_dict()  # unknown distributed_type: ValueError
    except (OSError, yaml.YAMLError, ValueError, AttributeError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from e
    # accelerate copies nested keys onto its launch arguments and silently ignores a misspelt one
    known = vars(launch_command_parser().parse_args(["script.py"]))
    for section, prefix in (("deepspeed_config", ""), ("fsdp_config", "fsdp_")):
        for key in config.get(section, {}):
            if (key if key.startswith(prefix) else prefix + key) not in known:
                raise ValueError(f"{path}: unknown {section} key {key!r}")
    return config


def main(argv: list[str]) -> None:
    if argv[:1] != ["--check"]:
        # when one rank fails, torchrun SIGTERMs the others: leave through run's `finally` and papermill's cleanup
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        return run(argv)
    for path in argv[1:]:
        try:
            config = check_config(path)
        except ValueError as e:
            sys.exit(str(e))
        print(f"ok {path}: {config['distributed_type']}, {config.get('num_processes')} processes")


if __name__ == "__main__":
    main(sys.argv[1:])
