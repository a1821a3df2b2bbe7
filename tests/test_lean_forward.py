"""The decoder's lean forward pass (``sml.dialogue.lean_forward``): the model's own logits and KV cache, bit for
bit, through prefills, prefills on top of a kept cache and decode steps; and the model's own forward wherever
the lean pass cannot vouch for that."""

import pytest
import torch
from tiny_models import tiny_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from sml.dialogue import decoding
from sml.dialogue.lean_forward import lean_forward
from sml.train import sft
from sml.train.base_model import build_model


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _qwen2(tok, heads=4, kv_heads=2):
    model = build_model(tok, hidden_size=32, num_layers=2, num_heads=heads, num_kv_heads=kv_heads,
                        intermediate_size=48, seed=3)
    with torch.no_grad():  # larger weights than the init's, so that rounding differences would show
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model.eval()


def _llama(tok):
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=1, attention_bias=True, mlp_bias=True,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(4)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model.eval()


def _passes(model, lean: bool, attention: str) -> list[torch.Tensor]:
    """Every slot's logits after each step of a run with turns of many lengths in 4 slots: openings, a second
    turn of each conversation on top of its kept cache, and the decode steps between; then the KV cache."""
    decoder = decoding.Decoder(model, eos_id=-1, pad_id=0, slots=4, max_new_tokens=6, temperature=1.0, top_p=1.0,
                               attention=attention)
    assert decoder.lean is not None
    if not lean:
        decoder.lean = None
    generator = torch.Generator().manual_seed(0)
    prompts = {key: torch.randint(3, 300, (length,), generator=generator).tolist()
               for key, length in enumerate((5, 17, 9, 30, 2, 12))}
    for key, prompt in prompts.items():
        decoder.add(key, prompt, torch.Generator().manual_seed(key))
    seen, turns = [], {key: 1 for key in prompts}
    while decoder.busy:
        for key, tokens, _ in decoder.step():
            if turns[key] == 1:  # the next turn: what it wrote plus a reply, read on top of its cache
                turns[key] = 2
                prompts[key] = prompts[key] + tokens + [7] * (3 + key)
                decoder.add(key, prompts[key], torch.Generator().manual_seed(100 + key))
            else:
                decoder.release(key)
        if decoder.logits is not None:
            seen.append(decoder.logits.clone())
    return seen + decoder.cache.keys + decoder.cache.values


@pytest.mark.parametrize("attention", ["dense", "by_rows"])
@pytest.mark.parametrize("build", [_qwen2, lambda tok: _qwen2(tok, heads=2, kv_heads=2), _llama],
                         ids=["qwen2-gqa", "qwen2-mha", "llama-biases"])
def test_the_lean_pass_gives_the_models_own_logits_and_cache_bit_for_bit(tok, build, attention, monkeypatch):
    monkeypatch.setattr(decoding, "CALL_COLUMNS", 0)  # by rows: every row its own attention call where it can be
    monkeypatch.setattr(decoding, "CALL_TOKENS", 0)
    model = build(tok)
    lean, own = _passes(model, True, attention), _passes(model, False, attention)
    assert len(lean) == len(own) > 20
    assert all(torch.equal(a, b) for a, b in zip(lean, own))


def test_the_lean_pass_is_used_only_where_it_computes_what_the_model_does(tok):
    model = _qwen2(tok)
    assert lean_forward(model) is not None
    hook = model.model.layers[1].mlp.register_forward_hook(lambda *args: None)  # e.g. a test fixing logits
    assert lean_forward(model) is None
    hook.remove()
    model.train()
    assert lean_forward(model) is None  # dropout, and weights that change under it
    model.eval()
    cls = type(model)
    model.__class__ = type(cls.__name__, (cls,), {})  # the same name, other code (e.g. a hub model's own)
    assert lean_forward(model) is None
    model.__class__ = cls
    model.config._attn_implementation = "eager"
    assert lean_forward(model) is None
    model.config._attn_implementation = "sdpa"
    model.model.layers[0].self_attn.forward = model.model.layers[0].self_attn.forward  # patched (TRL does this)
    assert lean_forward(model) is None
    del model.model.layers[0].self_attn.forward
    assert lean_forward(model) is not None
    from sml import settings
    finetune = settings.Finetune(lora_r=4, lora_alpha=8, lora_dropout=0.0, epochs=1.0, batch_size=1, lr=1e-3)
    adapted = sft.add_adapter(model, finetune, seed=0).eval()
    assert lean_forward(adapted) is None  # a LoRA layer left unmerged
    assert lean_forward(sft.inference_copy(adapted)) is not None  # merged: plain linears again
