"""The decoder's forward pass without transformers' wrapping of every call: the same operations on the same
tensors, so the same numbers, bit for bit.

For a model as small as the embedded student, a decode step is mostly Python around small matrix products:
the model's decorators and output capturing, its mask preparation, and ~60 module calls a pass (each with
its hook checks). ``lean_forward(model)`` replays a Qwen2 or Llama decoder layer by layer with the model's
own weights, its rotary embedding, its RMSNorm and activation forwards, its rotary function and transformers'
SDPA attention (or the decoder's by-rows attention), in the order its modelling code runs them
(``tests/test_lean_forward.py`` compares the logits with ``torch.equal``). It returns None, so the decoder
calls the model as usual, for anything it cannot vouch for: another architecture, sliding-window layers,
another attention implementation, a module that is not a plain ``nn.Linear`` (an unmerged LoRA layer, a
quantised one), hooks or a patched ``forward`` on any module (a profiler, accelerate's device placement,
a test's fixed logits), or a model in training mode.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# the causal LMs whose modelling code this replays (their layers are the same up to which biases exist)
REPLAYED = ("Qwen2ForCausalLM", "LlamaForCausalLM")


def lean_forward(model) -> LeanForward | None:
    """A ``LeanForward`` for ``model``, or None where it would not compute what the model's own forward does."""
    config = getattr(model, "config", None)
    kind = type(model)
    if kind.__name__ not in REPLAYED or not kind.__module__.startswith("transformers.models.") or config is None:
        return None  # (a model's own code under a replayed name, e.g. a hub model's remote code, is not replayed)
    if getattr(config, "_attn_implementation", None) != "sdpa" or getattr(model, "use_kernels", False):
        return None
    if any(layer != "full_attention" for layer in getattr(config, "layer_types", None) or ()):
        return None
    for module in model.modules():
        if module.training or "forward" in module.__dict__ or module._forward_hooks or module._forward_pre_hooks:
            return None
    linears = [m for layer in model.model.layers for m in (layer.self_attn.q_proj, layer.self_attn.k_proj,
               layer.self_attn.v_proj, layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj,
               layer.mlp.down_proj)] + [model.lm_head]
    if any(type(m) is not nn.Linear for m in linears):  # a LoRA layer left unmerged, a quantised one
        return None
    return LeanForward(model)


class LeanForward:
    """``LeanForward(model)(ids, mask, positions, cache, attend)``: the logits after each row's last token, the
    new tokens' keys and values written to ``cache`` (``decoding.Slots``) as the model's own forward writes them.
    ``attend(module, query, key, value, mask)`` is the attention function (the decoder's)."""

    def __init__(self, model):
        inner = model.model
        self.embed, self.rotary, self.norm = inner.embed_tokens, inner.rotary_emb, inner.norm.forward
        self.head = model.lm_head.weight, model.lm_head.bias
        # the rotary function of the model's own modelling module, which its attention calls
        rotate = sys.modules[type(inner.layers[0].self_attn).__module__].apply_rotary_pos_emb
        self.layers = [_Layer(layer, rotate) for layer in inner.layers]

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache,
                 attend: Callable) -> torch.Tensor:
        hidden = self.embed(ids)
        cos, sin = self.rotary(hidden, positions)
        for index, layer in enumerate(self.layers):
            hidden = layer(hidden, cos, sin, mask, cache, index, attend)
        return F.linear(self.norm(hidden)[:, -1:], *self.head)[:, -1]


class _Layer:
    """One decoder layer's weights and norms, looked up once (a module attribute costs a dictionary walk)."""

    def __init__(self, layer, rotate: Callable):
        a, mlp = layer.self_attn, layer.mlp
        self.attention, self.rotate = a, rotate
        self.head_dim = a.head_dim
        self.q, self.k, self.v, self.o = ((p.weight, p.bias) for p in (a.q_proj, a.k_proj, a.v_proj, a.o_proj))
        self.gate, self.up, self.down = ((p.weight, p.bias) for p in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))
        self.act = mlp.act_fn.forward
        self.norm_in, self.norm_out = layer.input_layernorm.forward, layer.post_attention_layernorm.forward

    def __call__(self, hidden, cos, sin, mask, cache, index, attend):
        rows, tokens = hidden.shape[:2]
        heads = (rows, tokens, -1, self.head_dim)
        x = self.norm_in(hidden)
        query = F.linear(x, *self.q).view(heads).transpose(1, 2)
        key = F.linear(x, *self.k).view(heads).transpose(1, 2)
        value = F.linear(x, *self.v).view(heads).transpose(1, 2)
        query, key = self.rotate(query, key, cos, sin)
        key, value = cache.update(key, value, index)
        out, _ = attend(self.attention, query, key, value, mask)
        hidden = hidden + F.linear(out.reshape(rows, tokens, -1).contiguous(), *self.o)
        x = self.norm_out(hidden)
        return hidden + F.linear(self.act(F.linear(x, *self.gate)) * F.linear(x, *self.up), *self.down)
