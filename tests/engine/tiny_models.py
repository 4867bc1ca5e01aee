"""Tiny models with random weights, built offline, that vLLM's CPU build can serve.

Every family shares one recipe (../shared/notes/tiny-model-families.md): a byte-level BPE
tokenizer (at most 512 tokens) trained here on a fixed sentence, hidden size 128 with 2
attention heads (head_dim 64: vLLM's CPU attention rejects 16) and 2 layers, saved in bfloat16
with `save_pretrained`. A model is under 1 MB and builds in a few seconds. The outputs are noise;
tests assert on token counts (`usage`), never on text, because a random model often emits
partial UTF-8 byte tokens that decode to "".

Add a family with one function calling `save_causal_lm` with its config and model classes.
"""

# torch and transformers load in seconds and exist only where vLLM is installed; importing
# them at the top would slow down (or break) collecting every other test tier.
# ruff: noqa: PLC0415

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

TOKENIZER_CORPUS: Final = ["the quick brown fox jumps over the lazy dog"] * 50
MAX_VOCAB_SIZE: Final = 512
COMMON_CONFIG: Final[dict[str, Any]] = {
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 512,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
# Long enough for a streaming completion that is still running when a test signals the server.
MAX_MODEL_LEN: Final = 512


def build_tokenizer(out: Path) -> Any:
    """Train a byte-level BPE tokenizer and save it, with a chat template, into `out`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=MAX_VOCAB_SIZE,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(TOKENIZER_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    fast.save_pretrained(str(out))
    return fast


def save_causal_lm(
    out: Path, config_cls: Any, model_cls: Any, *, seed: int = 0, **config: Any
) -> Path:
    """Tokenizer plus a randomly initialised `model_cls(config_cls(...))`, saved into `out`."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out)
    torch.manual_seed(seed)
    settings = {**COMMON_CONFIG, "vocab_size": len(tokenizer), **config}
    model = model_cls(config_cls(**settings)).to(torch.bfloat16)
    model.save_pretrained(str(out))
    return out


def build_llama(out: Path, *, seed: int = 0) -> Path:
    """A Llama-architecture model (grouped-query attention with one KV head)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return save_causal_lm(
        out,
        LlamaConfig,
        LlamaForCausalLM,
        seed=seed,
        intermediate_size=256,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=MAX_MODEL_LEN,
    )
