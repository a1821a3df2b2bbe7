"""Multi-GPU configs and the notebook launcher, checked on CPU: the configs parse as `accelerate launch` reads
them, and each rank runs the notebook while only rank 0 keeps the output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env
from nbformat.v4 import new_code_cell, new_notebook
from papermill.exceptions import PapermillExecutionError

from sml.train import launch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "accelerate"
EXPECTED = {"multi_gpu": ("MULTI_GPU", None), "deepspeed_zero2": ("DEEPSPEED", 2),
            "deepspeed_zero3": ("DEEPSPEED", 3), "fsdp": ("FSDP", None)}


def test_every_config_has_an_expectation():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", EXPECTED)
def test_config_parses_with_accelerates_loader(name):
    config = launch.check_config(CONFIGS / f"{name}.yaml")
    kind, stage = EXPECTED[name]
    assert (config["distributed_type"], config["num_processes"], config["mixed_precision"]) == (kind, 8, "bf16")
    assert config.get("deepspeed_config", {}).get("zero_stage") == stage


def launch_args(name, *extra):
    """The arguments `accelerate launch` derives from a config file (its own code, no GPU needed)."""
    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / f"{name}.yaml"), *extra, "x.py"])
    return _validate_launch_command(args)


def test_num_processes_on_the_command_line_overrides_the_config():
    args, _, _ = launch_args("multi_gpu", "--num_processes", "2")
    assert args.multi_gpu and args.num_processes == 2


@pytest.mark.parametrize("name", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_environment_without_deepspeed_installed(name):
    args, defaults, _ = launch_args(name)
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command does
    _, env = prepare_deepspeed_cmd_env(args)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == str(EXPECTED[name][1])
    if name == "deepspeed_zero3":  # what lets Trainer.save_model gather a LoRA adapter from the shards
        assert env["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] == "true"


def test_fsdp_plugin_builds_from_the_launch_environment(monkeypatch):
    args, _, _ = launch_args("fsdp")
    for key, value in prepare_multi_gpu_env(args).items():
        if key.startswith(("FSDP_", "ACCELERATE_")):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    # Trainer.save_model only writes a PEFT adapter under FULL_STATE_DICT
    assert (plugin.fsdp_version, plugin.state_dict_type.name) == (2, "FULL_STATE_DICT")


@pytest.mark.parametrize("text, problem", [("distributed_type: NOPE\n", "not a valid DistributedType"),
                                           ("distributed_type: [FSDP\n", "expected ','"),
                                           ("distributed_type: FSDP\nfsdp_config:\n  fsdp_stat_dict_type: x\n",
                                            "unknown fsdp_config key"),
                                           ("- a list\n", "")])
def test_broken_config_raises_naming_the_file(tmp_path, text, problem):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=str(path)) as error:
        launch.check_config(path)
    assert problem in str(error.value)


def test_missing_config_raises_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match="nothere.yaml"):
        launch.check_config(tmp_path / "nothere.yaml")


def test_check_command(tmp_path, capsys):
    launch.main(["--check", *map(str, sorted(CONFIGS.glob("*.yaml")))])
    assert capsys.readouterr().out.count("ok ") == len(EXPECTED)
    (tmp_path / "bad.yaml").write_text("distributed_type: NOPE\n")
    with pytest.raises(SystemExit, match="bad.yaml"):
        launch.main(["--check", str(tmp_path / "bad.yaml")])


def test_output_path_per_rank(monkeypatch, tmp_path):
    monkeypatch.delenv("RANK", raising=False)
    assert launch.output_path("out.ipynb") == "out.ipynb"
    monkeypatch.setenv("RANK", "0")
    assert launch.output_path("out.ipynb") == "out.ipynb"
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    other = Path(launch.output_path("out.ipynb"))
    assert other.parent == tmp_path and other.suffix == ".ipynb" and other.exists()


def write_notebook(path, code):
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [new_code_cell("record = ''\nn = 0\nname = ''\nflag = False\nraw = ''\nextra = None",
                              metadata={"tags": ["parameters"]}), new_code_cell(code)]
    nbformat.write(nb, path)


RECORD = ("import json, os\nfrom pathlib import Path\nPath(record).write_text(json.dumps(dict(n=n, name=name, "
          "flag=flag, raw=raw, extra=extra, rank=os.environ.get('RANK'), cwd=os.getcwd())))")


@pytest.mark.parametrize("rank", ["0", "1"])
def test_each_rank_runs_the_notebook_and_only_rank_0_keeps_it(tmp_path, monkeypatch, rank):
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    write_notebook(tmp_path / "in.ipynb", RECORD)
    out, record = tmp_path / "out.ipynb", tmp_path / "record.json"
    launch.run([str(tmp_path / "in.ipynb"), str(out), "-p", "record", str(record), "-p", "n", "3", "-p", "name", "abc",
                "-p", "flag", "True", "-r", "raw", "3", "-y", "{extra: [1, 2]}"])
    # papermill's own parsing: -p guesses bool/int/float, -r keeps the string, -y is YAML
    assert json.loads(record.read_text()) == dict(n=3, name="abc", flag=True, raw="3", extra=[1, 2], rank=rank,
                                                  cwd=str(REPO))
    assert out.exists() == (rank == "0")
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_failing_notebook_exits_non_zero_and_cleans_up(tmp_path):
    write_notebook(tmp_path / "in.ipynb", "raise RuntimeError('boom')")
    env = {**os.environ, "RANK": "1", "TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-m", "sml.train.launch", str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb")],
                          env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "boom" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ipynb"]
    with pytest.raises(PapermillExecutionError):
        launch.run([str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb")])  # in process: the error itself


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes_join_one_group(tmp_path):
    """A real `accelerate launch` (torchrun, gloo on CPU): both kernels join one process group, one report."""
    write_notebook(tmp_path / "in.ipynb", "import torch, torch.distributed as dist\ndist.init_process_group('gloo')\n"
                   "x = torch.tensor([dist.get_rank() + 1])\ndist.all_reduce(x)\n"
                   "open(f'{record}{dist.get_rank()}', 'w').write(f'{n} {dist.get_world_size()} {x.item()}')")
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO / "src")}
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file", str(CONFIGS / "multi_gpu.yaml"),
           "--num_processes", "2", "-m", "sml.train.launch", str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"),
           "-p", "record", str(tmp_path / "rank"), "-p", "n", "5"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["5 2 3"] * 2  # 1 + 2 summed over both ranks
    assert (tmp_path / "out.ipynb").exists() and not list(tmp_path.glob("sml_rank*"))  # rank 1's copy is gone
