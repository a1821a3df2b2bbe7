"""The CPU benchmark's arithmetic and its forward-pass accounting (the benchmark itself is `make bench`)."""

import statistics

import pytest

from benchmarks import bench
from sml.dialogue.engine import run_dialogues
from sml.dialogue.environment import Dialogue
from sml.dialogue.student import Student
from sml.tasks import toy_math
from sml.dialogue.teacher import ScriptedTeacher
from tiny_models import tiny_model, tiny_tokenizer


def test_reply_tokens_count_what_the_student_reads_between_its_turns():
    d = Dialogue(task={}, variant="full", sample=0, messages=[], ids=list(range(40)))
    # opening 0..9, turn 1 = 10..14, reply 15..21, turn 2 = 22..29, reply 30..32, turn 3 = 33..39
    d.turn_starts, d.student_ids = [10, 22, 33], [[0] * 5, [0] * 8, [0] * 7]
    d.labels = ["attempt"] * 3
    assert bench.reply_tokens([d, d]) == 2 * ((22 - 15) + (33 - 30))


def test_ratio_bound_follows_its_definition():
    breakdown = {"reply_prefill_s": 0.2, "reply_prefill_padded_tokens": 400}
    # raw: 100 tokens in 1.0 s over 2 rounds, each with a 0.1 s prefill -> 0.8 s of decoding
    out = bench.ratio_bound(tokens=50, raw=[(100, 1.2), (100, 1.0), (100, 0.9)], raw_prefill_s=0.1,
                            opening_tokens=40, rounds=2, breakdown=breakdown, replies=300, raw_rate=100.0)
    floor = 50 * 0.8 / 100 + 0.1  # decode 50 tokens at raw speed, prefill the openings once
    expect = {"replies_as_prefilled": 50 / (floor + 0.2) / 100,
              "replies_unpadded": 50 / (floor + 0.2 * 300 / 400) / 100,
              "replies_at_opening_cost": 50 / (floor + 0.1 * 300 / 40) / 100}
    assert out["ratio_vs_raw_bound"] == pytest.approx(expect, abs=1e-3)
    assert out["reply_tokens"] == 300 and out["raw_prefill_s"] == 0.1


def test_bound_seconds_decode_at_raw_speed_plus_prefills():
    # raw: 100 tokens in 1.0 s over 2 rounds with 0.1 s prefills -> 0.8 s decoding; 50 tokens take 0.4 s
    assert bench.bound_seconds(50, 100, 1.0, 0.1, 2, reply_prefill_s=0.3) == pytest.approx(0.4 + 0.1 + 0.3)
    assert bench.bound_seconds(50, 100, 0.2, 0.1, 2, reply_prefill_s=0.3) is None


def test_ratio_bound_is_none_when_raw_is_all_prefill():
    out = bench.ratio_bound(tokens=10, raw=[(10, 0.19)], raw_prefill_s=0.1, opening_tokens=4, rounds=2,
                            breakdown={"reply_prefill_s": 0.1, "reply_prefill_padded_tokens": 10}, replies=8,
                            raw_rate=50.0)
    assert out["ratio_vs_raw_bound"] is None and out["reply_tokens"] == 8


def test_breakdown_tells_reply_prefills_from_openings():
    tok = tiny_tokenizer()
    student = Student(tiny_model(tok), tok, device="cpu")
    tasks, runs = toy_math.generate(6, 4), []
    kwargs = dict(max_turns=3, progress=False, seed=1)
    dialogue = bench.engine_settings(max_new_tokens=6, temperature=1.0, batch_size=6)
    breakdown = bench.forward_breakdown(student, lambda: runs.append(
        run_dialogues(tasks, student, ScriptedTeacher(), dialogue, **kwargs)))
    dialogues = runs[0]
    rounds = max(d.turns for d in dialogues)
    assert rounds >= 2  # the tiny model rarely solves anything: there are replies to read
    assert breakdown["prefill_calls"] >= rounds  # a refill whenever enough turns wait
    assert breakdown["opening_prefill_s"] > 0 and breakdown["reply_prefill_s"] > 0
    assert breakdown["reply_prefill_padded_tokens"] == sum(r * w for r, w in breakdown["prefill_shapes"][1:])
    # padding only adds: the padded count covers every reply token (a turn cut at the cap adds its last token)
    assert breakdown["reply_prefill_padded_tokens"] >= bench.reply_tokens(dialogues)
    # the same run without the KV cache re-reads whole conversations: nothing reads a past
    plain = bench.forward_breakdown(student, lambda: run_dialogues(tasks, student, ScriptedTeacher(), dialogue,
                                                                   reuse_cache=False, **kwargs))
    assert plain["reply_prefill_s"] == 0 and plain["reply_prefill_padded_tokens"] == 0
    assert plain["opening_prefill_s"] > 0 and plain["prefill_calls"] >= rounds


@pytest.fixture(scope="module")
def student():
    tok = tiny_tokenizer()
    return Student(tiny_model(tok), tok, device="cpu")


def test_engine_vs_bound_and_ratio_vs_naive_are_medians_of_their_repetitions(student):
    out = bench.bench(student, toy_math.generate(6, 5), n_dialogues=6, turns=2, max_new_tokens=6, repeats=3,
                      naive_dialogues=2)
    runs = out["engine_vs_bound_runs"]
    assert len(runs) == 3 and all(r is None or r > 0 for r in runs)
    measured = [r for r in runs if r is not None]
    assert out["engine_vs_bound"] == (statistics.median(measured) if measured else None)
    naive = out["ratio_vs_naive_runs"]  # each repetition's engine over its own naive loop
    assert len(naive) == 3 and all(r > 0 for r in naive) and out["ratio_vs_naive"] == statistics.median(naive)
    for key in ("engine_tokens_per_s", "raw_generate_tokens_per_s", "naive_tokens_per_s", "ratio_vs_raw",
                "ratio_vs_naive", "ratio_vs_raw_bound", "engine_breakdown"):
        assert key in out



def test_more_dialogues_than_slots_run_every_batch_at_the_slot_count(student, monkeypatch):
    """An evaluation's shape (more dialogues than slots): the engine never runs more rows than its slots, and
    raw ``generate`` runs the same prompts in batches of that size."""
    rows = []
    generate = student.model.generate
    monkeypatch.setattr(student.model, "generate", lambda **kw: rows.append(kw["input_ids"].shape[0]) or generate(**kw))
    out = bench.bench(student, toy_math.generate(10, 5), n_dialogues=10, turns=2, max_new_tokens=6, repeats=1,
                      naive_dialogues=2, batch_size=4)
    assert out["setup"]["dialogues"] == 10 and out["setup"]["batch_size"] == 4
    assert max(r for r, _ in out["engine_breakdown"]["prefill_shapes"]) <= 4
    assert rows and max(rows) == 4 and 2 in rows  # 10 openings: batches of 4, 4 and 2

def test_digest_tells_the_same_dialogues_from_changed_ones(student):
    """``bench.digest`` (what ``benchmarks.same_dialogues`` prints): two runs with one seed give one digest;
    another seed, or one teacher message changed, another."""
    tasks, settings = toy_math.generate(4, 5), bench.engine_settings(6, 1.0, 4)
    run = lambda seed: run_dialogues(tasks, student, ScriptedTeacher(), settings, max_turns=2, seed=seed,
                                     progress=False)
    first, again = run(0), run(0)
    assert bench.digest(first) == bench.digest(again)
    assert bench.digest(run(1)) != bench.digest(first)
    again[2].messages[0]["content"] += " "
    assert bench.digest(again) != bench.digest(first)


def test_grpo_vs_trl_compares_steps_at_equal_completion_tokens(student):
    out = bench.grpo_vs_trl(student, toy_math.generate(4, 6), steps=2, tasks_per_step=2, group_size=2, turns=2,
                            max_new_tokens=6, repeats=3)
    grpo = out["grpo"]
    # one ratio per repetition, each of that repetition's two runs (seconds per step rounded to milliseconds,
    # which are few here), and their median
    assert len(out["grpo_vs_trl_runs"]) == len(grpo["runs_s_per_step"]) == 3
    for ratio, (ours_s, trl_s) in zip(out["grpo_vs_trl_runs"], grpo["runs_s_per_step"]):
        assert ratio == pytest.approx(ours_s / trl_s, rel=0.1)
    assert out["grpo_vs_trl_single_turn"] == sorted(out["grpo_vs_trl_runs"])[1]
    # TRL's single-turn completions are forced to the length our student sampled per conversation
    assert grpo["trl_completion_tokens"] == grpo["sampled_tokens_per_conversation"] > 0
    with pytest.raises(ValueError, match="repeats"):
        bench.grpo_vs_trl(student, toy_math.generate(4, 6), repeats=0)


def test_the_thread_benchmark_compares_both_layouts_on_the_same_work(tmp_path):
    """benchmarks/threads.py, at tiny sizes: both kinds of work, both layouts, a ratio of throughputs."""
    import json

    from benchmarks import threads
    from sml import settings
    from sml.tasks.build import build

    tokenizer = tiny_tokenizer()
    tiny_model(tokenizer).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    from pathlib import Path

    cfg = settings.load(Path(__file__).resolve().parents[1] / "profiles" / "smoke.yaml")
    build(cfg.tasks.model_copy(update={"sources": "toy_math"}), tmp_path / "tasks")
    result = threads.main(["--model", str(tmp_path / "model"), "--tasks", str(tmp_path / "tasks"), "--cores", "2",
                           "--dialogues", "4", "--steps", "2", "--repeats", "1", "--out", str(tmp_path / "t.json")])
    for kind in ("generation", "training"):
        measured = result[kind]
        assert measured["one_process_2_threads"] > 0 and measured["2_processes_1_thread"] > 0
        assert measured["processes_vs_threads"] == pytest.approx(
            measured["2_processes_1_thread"] / measured["one_process_2_threads"], rel=0.01)
    assert json.loads((tmp_path / "t.json").read_text()) == result


def test_the_bench_runs_the_teacher_it_is_given(student):
    """``make bench`` measures the pipeline's teacher (params.yaml's, restating in the calibrated world)."""
    class Counting(ScriptedTeacher):
        replies = 0

        def reply(self, view):
            Counting.replies += 1
            return super().reply(view)

    out = bench.bench(student, toy_math.generate(4, 5), n_dialogues=4, turns=2, max_new_tokens=6, repeats=1,
                      naive_dialogues=1, teacher=Counting(restate=True))
    assert Counting.replies > 0 and out["setup"]["teacher"] == "scripted, restating"


def test_the_bench_refuses_an_llm_teacher_before_loading_anything(tmp_path):
    (tmp_path / "params.yaml").write_text("teacher.kind: openai\nteacher.restate: false\nteacher.model: m\n"
                                          "teacher.base_url: http://localhost:1/v1\n")  # a profile over params.yaml
    (tmp_path / "model").mkdir()  # exists, but is no model: loading it would fail differently
    with pytest.raises(SystemExit, match="teacher.kind"):
        bench.main(["--model", str(tmp_path / "model"), "--settings", str(tmp_path / "params.yaml")])
