"""The embedded base student: a digit-splitting BPE tokenizer trained here, a ChatML chat template,
and a small Qwen2-architecture model built from a config (no hub downloads anywhere).

The chat template wraps each assistant message (and its end token) in ``{% generation %}`` so that
TRL's ``assistant_only_loss`` trains on student tokens only. In our dialogues the teacher speaks as
``user`` and the student as ``assistant``.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

PAD, BOS_TURN, EOS_TURN = "<|endoftext|>", "<|im_start|>", "<|im_end|>"

# ChatML; generation markers around what the assistant says, including its end token.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{- message['content'] + '<|im_end|>' -}}{% endgeneration %}{{- '\n' -}}"
    "{%- else -%}"
    "{{- message['content'] + '<|im_end|>\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer that splits every digit into its own token (so numbers are spelled
    digit by digit, which small models learn arithmetic from far better), trained on ``texts``."""
    if not 300 <= vocab_size <= 65536:
        raise ValueError(f"base_student.vocab_size: must be in [300, 65536], got {vocab_size!r}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS_TURN, EOS_TURN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS_TURN,
                                   chat_template=CHAT_TEMPLATE, padding_side="left", clean_up_tokenization_spaces=False)


def build_model(tokenizer: PreTrainedTokenizerFast, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                num_kv_heads: int = 2, intermediate_size: int = 384, max_positions: int = 2048,
                seed: int = 0) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 model sized by the arguments (the defaults give about 1M parameters)."""
    import torch

    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ValueError(f"base_student: hidden_size ({hidden_size}) must divide by num_heads ({num_heads}), "
                         f"and num_heads by num_kv_heads ({num_kv_heads})")
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
