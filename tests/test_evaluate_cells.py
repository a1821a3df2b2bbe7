"""Evaluation batched across cells: every cell of one student (domains x variants x seeds, with the retry
comparators) in one engine run gives each cell exactly what a run of its own gives it, and an interrupted
batched run resumes chunk by chunk."""

import pandas as pd
import pytest
import sections
import torch
from failing_teacher import FailingTeacher
from tiny_models import tiny_model, tiny_tokenizer

from sml import resume
from sml import workers as sml_workers
from sml.dialogue.student import Student
from sml.dialogue.teacher import ScriptedTeacher
from sml.evaluation.evaluate import Cell, evaluate, evaluate_cells, retry_comparator
from sml.tasks import toy_code, toy_math
from sml.tasks.schema import make_task

DIALOGUE = sections.dialogue(eval_turns=4, max_new_tokens=16, temperature=1.0)
CHUNK = 3  # 5 tasks per cell: chunks of 3 and 2, so the cells also run together chunk by chunk


@pytest.fixture(scope="module")
def student():
    """The tiny model sampling at temperature 1 under fixed logits, nudged towards digits so that some
    dialogues solve the one-digit sums below, at various turns. Fixed logits (as in test_dialogue's
    random-streams test) show exactly the random numbers each dialogue draws: a model's logits may differ
    in their last bits with the batch's shape, which could move a token that sits right at a boundary."""
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    student = Student(model, tok, device="cpu")
    fixed = torch.randn(len(tok), generator=torch.Generator().manual_seed(0)) * 2
    fixed[[i for t, i in tok.get_vocab().items() if t.strip("Ġ ").isdigit()]] += 4.0
    fixed[student.eos_id] = torch.logsumexp(fixed, 0) - 2.2  # about one token in ten ends the turn

    def fix_logits(module, args, out):
        out.logits.copy_(fixed.expand_as(out.logits))

    model.register_forward_hook(fix_logits)
    return student


def small_sum(i, a, b):
    expression = f"{a} + {b}"
    return make_task(id=f"m/{i}", domain="math", source="toy_math", prompt=f"Calculate {expression}.",
                     answer=str(a + b), solution=toy_math.worked_solution(expression, str(a + b)),
                     shards=toy_math.shards_of(expression), metadata={"expression": expression})


DOMAINS = {"math": [small_sum(i, i % 4, 1 + i % 3) for i in range(5)], "code": toy_code.generate(5, 0)}


def plan(folder=None):
    return {(domain, variant, seed): Cell(tasks, variant, seed, retries=variant == "full",
                                          folder=folder and folder / f"{domain}_{variant}_s{seed}",
                                          retry_folder=folder and folder / f"{domain}_retry_s{seed}")
            for domain, tasks in DOMAINS.items() for variant in ("full", "sharded") for seed in (0, 1)}


@pytest.mark.parametrize("at_once", [True, False], ids=["together", "cell_by_cell"])
def test_cells_run_together_give_each_cell_what_it_gets_alone(student, monkeypatch, at_once):
    """``together`` (evaluation.cells_together) changes how many engine runs there are, never a transcript."""
    engine_runs = []
    real = resume.run_groups
    monkeypatch.setattr(resume, "run_groups", lambda chunks, *a, **k: engine_runs.append(len(chunks))
                        or real(chunks, *a, **k))
    together = evaluate_cells(student, ScriptedTeacher(), plan(), DIALOGUE, condition="sml_online", train_domain="math",
                              together=at_once, chunk_tasks=CHUNK, progress=False)
    # 8 cells and 4 retry comparators, 2 chunks each: 2 runs of 12 groups, or 24 runs of one
    assert engine_runs == ([12, 12] if at_once else [1] * 24)
    monkeypatch.undo()
    assert list(together) == list(plan())
    solved = []
    for (domain, variant, seed), cell in plan().items():
        got = together[(domain, variant, seed)]
        retries = curve = None
        if cell.retries:
            retries, _, curve = retry_comparator(student, ScriptedTeacher(), cell.tasks, DIALOGUE, seed=seed,
                                                 chunk_tasks=CHUNK, progress=False)
            assert got.retries.to_list() == retries.to_list()
            pd.testing.assert_frame_equal(got.retry_curve, curve)
        else:
            assert got.retries is None and got.retry_curve is None
        data, rows, behaviour = evaluate(student, ScriptedTeacher(), cell.tasks, DIALOGUE, condition="sml_online",
                                         train_domain="math", variant=variant, seed=seed, chunk_tasks=CHUNK,
                                         retries=retries, progress=False)
        assert got.data.to_list() == data.to_list()  # messages, turns, solved turns, token ids: everything
        pd.testing.assert_frame_equal(got.rows, rows)
        pd.testing.assert_series_equal(pd.Series(got.behaviour), pd.Series(behaviour))  # NaN-aware
        solved.append(tuple(data["solved_turn"]))
    assert len({turn for turns in solved for turn in turns}) >= 3  # solved at several turns (and some never)
    assert solved[0] != solved[1]  # the two seeds of a cell differ



def test_an_interrupted_batched_run_resumes_from_every_cells_finished_chunks(student, tmp_path, monkeypatch):
    whole = evaluate_cells(student, ScriptedTeacher(), plan(), DIALOGUE, condition="base", train_domain="none",
                           chunk_tasks=CHUNK, progress=False)
    failing = FailingTeacher(fail_after=_batches_of_first_chunk(student))  # fails as the second chunk begins
    with pytest.raises(RuntimeError, match=r"chunk 2 of 2.*the first 1 chunk\(s\) are kept in .*run again to resume"):
        evaluate_cells(student, failing, plan(tmp_path), DIALOGUE, condition="base", train_domain="none",
                       chunk_tasks=CHUNK, progress=False)
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 12  # 8 cells and 4 retry comparators
    assert all(sorted(q.name for q in (tmp_path / f).iterdir()) == ["chunk-00000.jsonl"] for f in folders)

    simulated = []
    real = resume.run_groups
    monkeypatch.setattr(resume, "run_groups",
                        lambda chunks, *a, **k: simulated.append([len(c.tasks) for c in chunks])
                        or real(chunks, *a, **k))
    again = evaluate_cells(student, ScriptedTeacher(), plan(tmp_path), DIALOGUE, condition="base", train_domain="none",
                           chunk_tasks=CHUNK, progress=False)
    assert simulated == [[2] * 12]  # one engine run: the last chunk (5 = 3 + 2 tasks) of every cell
    for key, got in again.items():
        assert got.data.to_list() == whole[key].data.to_list()
        assert (got.retries is None) == (whole[key].retries is None)
        assert got.retries is None or got.retries.to_list() == whole[key].retries.to_list()


def _batches_of_first_chunk(student):
    """How many batches of replies the teacher writes in the first chunk of the batched run."""
    teacher = FailingTeacher(fail_after=10**9)
    cells = {key: Cell(cell.tasks[:CHUNK], cell.variant, cell.seed, cell.retries) for key, cell in plan().items()}
    evaluate_cells(student, teacher, cells, DIALOGUE, condition="base", train_domain="none", progress=False)
    return teacher.batches


def test_worker_processes_give_each_cell_what_it_gets_in_this_process():
    """``machine.workers``: cell by cell, the groups shared out over one-thread worker processes (spawned, the
    student and teacher sent to them) come back as the same dialogues, in the same order, as in this process
    (one torch thread here too, so that no sum is reordered)."""
    tok = tiny_tokenizer()
    student = Student(tiny_model(tok), tok, device="cpu")  # no hooks: it must travel to the workers
    assert sml_workers.usable(student, 2, 12) and not sml_workers.usable(student, 1, 12)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = dict(condition="base", train_domain="none", together=False, chunk_tasks=CHUNK, progress=False)
        here = evaluate_cells(student, ScriptedTeacher(), plan(), DIALOGUE, workers=1, **args)
        apart = evaluate_cells(student, ScriptedTeacher(), plan(), DIALOGUE, workers=2, **args)
    finally:
        torch.set_num_threads(threads)
    assert list(apart) == list(here)
    for key, got in apart.items():
        assert got.data.to_list() == here[key].data.to_list()
        assert (got.retries is None) == (here[key].retries is None)
        assert got.retries is None or got.retries.to_list() == here[key].retries.to_list()
        pd.testing.assert_frame_equal(got.rows, here[key].rows)
    assert len({str(got.data["messages"]) for got in apart.values()}) == len(apart)  # every cell its own


class UnsendableTeacher(ScriptedTeacher):
    def __init__(self):
        super().__init__()
        self.client = lambda text: text  # like an HTTP client: cannot be pickled to a worker


def test_worker_processes_need_what_they_run_to_be_sendable():
    tok = tiny_tokenizer()
    student = Student(tiny_model(tok), tok, device="cpu")
    with pytest.raises(ValueError, match=r"machine.workers: 2 worker processes need .*set machine.workers: 1"):
        evaluate_cells(student, UnsendableTeacher(), plan(), DIALOGUE, condition="base", train_domain="none",
                       together=False, workers=2, chunk_tasks=CHUNK, progress=False)
