"""Attention by rows (``Decoder(attention="by_rows")``): groups of rows that each read only their own key
columns give the dense attention's dialogues, and the grouping is the cheapest one."""

import itertools

import pytest
import sections
import torch
from tiny_models import tiny_model, tiny_tokenizer

from sml.dialogue import decoding
from sml.dialogue.engine import run_dialogues
from sml.dialogue.student import Student
from sml.dialogue.teacher import ScriptedTeacher
from sml.tasks import toy_math


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_model(tok)  # 2 query heads on 1 key head: the shared-head paths run


def _cost(widths, runs, call_cost):
    return sum((end - first) * width + call_cost for first, end, width in runs)


def test_row_groups_cover_every_row_once_at_the_lowest_cost():
    widths = [900, 870, 120, 110, 100, 650, 640, 30]
    for call_cost in (0, 50, 400, 10_000):
        runs = decoding.row_groups(widths, call_cost)
        assert [r for first, end, _ in runs for r in range(first, end)] == list(range(len(widths)))
        assert all(width == max(widths[first:end]) for first, end, width in runs)
        every = [list(zip((0,) + cut, cut + (len(widths),))) for k in range(len(widths))
                 for cut in itertools.combinations(range(1, len(widths)), k)]  # every split into runs
        cheapest = min(sum((e - f) * max(widths[f:e]) + call_cost for f, e in split) for split in every)
        assert _cost(widths, runs, call_cost) == cheapest
    assert len(decoding.row_groups(widths, 10_000)) == 1
    assert len(decoding.row_groups(widths, 0)) == len(widths)  # free calls: every row reads only its own columns


def test_row_groups_start_only_at_the_candidate_rows():
    runs = decoding.row_groups(list(range(1000, 0, -1)), 0, candidates=8)
    assert all(first % 125 == 0 for first, _, _ in runs) and len(runs) == 8


def _dialogues(student, tasks, **dialogue):
    return [d.student_ids for d in run_dialogues(tasks, student, ScriptedTeacher(), sections.dialogue(**dialogue),
                                                 max_turns=3, seed=5, progress=False)]


@pytest.mark.parametrize("costs", [(decoding.CALL_COLUMNS, decoding.CALL_TOKENS), (0, 0)])
def test_attention_by_rows_gives_the_dense_dialogues(tok, model, monkeypatch, costs):
    """Greedy dialogues of conversations of many lengths, in 8 slots: the same turns either way, and with
    free calls (every candidate row its own group) the attention does read fewer columns than dense."""
    monkeypatch.setattr(decoding, "CALL_COLUMNS", costs[0])
    monkeypatch.setattr(decoding, "CALL_TOKENS", costs[1])
    widths = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        widths.append(k.shape[2])
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    tasks = toy_math.generate(24, 11)
    student = Student(model, tok, device="cpu")
    dense = _dialogues(student, tasks, temperature=0, max_new_tokens=12, batch_size=8)
    dense_calls = len(widths)
    student.attention = "by_rows"
    widths.clear()
    by_rows = _dialogues(student, tasks, temperature=0, max_new_tokens=12, batch_size=8)
    assert by_rows == dense
    assert sum(len(turn) for d in dense for turn in d) > 24 and max(len(d) for d in dense) > 1
    if costs == (0, 0):
        assert len(widths) > dense_calls  # split calls, some over fewer columns than the batch's widest row
        assert len(set(widths)) > 1


def test_sampled_dialogues_match_too(tok, model):
    """At temperature 1 each dialogue draws its own uniforms, so both attentions sample the same tokens
    (unless rounding moves a probability across one of them, which these 16 dialogues do not hit)."""
    tasks = toy_math.generate(16, 12)
    student = Student(model, tok, device="cpu")
    dense = _dialogues(student, tasks, max_new_tokens=12, batch_size=8)
    student.attention = "by_rows"
    assert _dialogues(student, tasks, max_new_tokens=12, batch_size=8) == dense


def test_an_unknown_attention_is_refused_by_name(tok, model):
    student = Student(model, tok, device="cpu")
    student.attention = "sparse"
    with pytest.raises(ValueError, match="attention: 'sparse'"):
        student.decoder(4, 8)


def test_compaction_moves_only_the_columns_a_slot_holds():
    """``Slots.permute``: the first ``columns`` of each source slot reach its destination (keys and values),
    the columns past them are left as they were."""
    cache = decoding.Slots(4)
    cache.keys = [torch.arange(4 * 2 * 6, dtype=torch.float).reshape(4, 1, 6, 2)]
    cache.values = [-cache.keys[0]]
    before = [t.clone() for t in cache.keys + cache.values]
    cache.permute([0, 1], [3, 2], columns=4)
    for after, old in zip(cache.keys + cache.values, before):
        assert torch.equal(after[[0, 1], :, :4], old[[3, 2], :, :4])
        assert torch.equal(after[:, :, 4:], old[:, :, 4:]) and torch.equal(after[2:], old[2:])
