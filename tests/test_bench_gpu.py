"""The GPU benchmark's plumbing, on the CPU: tiny stand-ins for the real configs, and the real configs'
sizes computed on the meta device (no memory)."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from benchmarks import bench_gpu
from tiny_models import tiny_tokenizer

CONFIGS = {"configs/models/qwen2.5-0.5b.json": 494_032_768, "configs/models/qwen2.5-1.5b.json": 1_543_714_304}


def expected_parameters(c) -> int:
    """Qwen2 with tied embeddings: embeddings, per layer q/k/v (with bias) + o + SwiGLU MLP + 2 norms, final norm."""
    kv = c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    attention = (c.hidden_size + 1) * (c.hidden_size + 2 * kv) + c.hidden_size ** 2
    layer = attention + 3 * c.hidden_size * c.intermediate_size + 2 * c.hidden_size
    return c.vocab_size * c.hidden_size + c.num_hidden_layers * layer + c.hidden_size


@pytest.mark.parametrize("path", CONFIGS)
def test_real_configs_load_with_the_published_sizes(path):
    config = bench_gpu.load_config(path)
    assert type(config).__name__ == "Qwen2Config" and config.vocab_size == 151936 and config.tie_word_embeddings
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n = sum(p.numel() for p in model.parameters())
    assert n == expected_parameters(config) == CONFIGS[path]  # 0.49B and 1.54B, as Qwen publishes


def test_head_hook_samples_only_tokenizer_ids_and_ends_turns_at_the_set_rate():
    tok = tiny_tokenizer()
    eos = tok.convert_tokens_to_ids(tok.eos_token)
    model = bench_gpu.build_model(bench_gpu.load_config(next(iter(CONFIGS)), tiny_vocab=len(tok) + 600), tok, "cpu",
                                  torch.float32, eos_prob=0.1)
    probs = model(input_ids=torch.tensor([[5, 6, 7, 8]])).logits.softmax(-1)
    assert probs.shape[-1] == len(tok) + 600  # the head keeps its full width (its cost)
    assert probs[..., len(tok):].max() == 0
    assert torch.allclose(probs[..., eos], torch.tensor(0.1), atol=1e-5)


def test_tiny_run_on_cpu_writes_every_model(tmp_path):
    out = tmp_path / "bench_gpu.json"
    bench_gpu.main(["--allow-cpu", "--tiny", "--out", str(out), "--tokenizer", str(tmp_path / "none"),
                    "--dialogues", "4", "--turns", "2", "--max-new-tokens", "8", "--repeats", "1",
                    "--naive-dialogues", "2", "--grpo-steps", "1", "--grpo-tasks-per-step", "1",
                    "--grpo-group-size", "2"])
    report = json.loads(out.read_text())
    for key in ("device", "date", "torch", "transformers", "tokenizer", "settings", "notes"):
        assert report[key] is not None, key
    assert set(report["models"]) == {"qwen2.5-0.5b", "qwen2.5-1.5b"}
    for entry in report["models"].values():
        assert entry["parameters"] > 0 and entry["ratio_vs_raw"] > 0
        assert entry["naive_dialogues"] == entry["bench"]["setup"]["naive_dialogues"] == 2  # of 4
        for rate in ("engine_tokens_per_s", "raw_generate_tokens_per_s", "naive_tokens_per_s"):
            assert entry[rate] > 0, rate
        assert entry["grpo"]["s_per_step"] > 0 and len(entry["grpo"]["step_time_s"]) == 1
        assert entry["grpo"]["precision"] == "torch.bfloat16 weights, fp32 LoRA, GRPOConfig bf16=False"  # CPU


def test_refuses_to_run_without_cuda_unless_allowed(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_:
        bench_gpu.main(["--out", str(tmp_path / "x.json")])
    assert "CUDA is not available" in str(exit_.value.code) and "--allow-cpu" in str(exit_.value.code)
    assert not (tmp_path / "x.json").exists()
