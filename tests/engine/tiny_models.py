"""Tiny models with random weights, built offline, that vLLM's CPU build can serve.

Every family shares one recipe (../shared/notes/tiny-model-families.md): a byte-level BPE
tokenizer (at most 512 tokens) trained here on a fixed sentence, hidden size 128 with 2
attention heads (head_dim 64: vLLM's CPU attention rejects 16) and 2 layers, saved in bfloat16
with `save_pretrained`. A model is under 1 MB and builds in a few seconds. The outputs are noise;
tests assert on token counts (`usage`), never on text, because a random model often emits
partial UTF-8 byte tokens that decode to "".

Add a decoder-only family with one function calling `save_causal_lm` with its config and model
classes. Whisper (encoder-decoder, with an audio processor) and Stable Diffusion (a diffusers
pipeline, served by the diffusers engine, not vLLM) have builders of their own.
"""

# torch and transformers load in seconds and exist only where vLLM is installed; importing
# them at the top would slow down (or break) collecting every other test tier.
# ruff: noqa: PLC0415

from __future__ import annotations

import io
import json
import wave
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


def build_mistral(out: Path, *, seed: int = 0) -> Path:
    """A Mistral-architecture model; sliding-window attention is off (vLLM serves it either way)."""
    from transformers import MistralConfig, MistralForCausalLM

    return save_causal_lm(
        out,
        MistralConfig,
        MistralForCausalLM,
        seed=seed,
        intermediate_size=256,
        num_key_value_heads=1,
        head_dim=64,
        sliding_window=None,
        max_position_embeddings=MAX_MODEL_LEN,
    )


def build_mixtral(out: Path, *, seed: int = 0) -> Path:
    """A Mixtral-architecture mixture of experts: 4 experts per layer, 2 routed per token."""
    from transformers import MixtralConfig, MixtralForCausalLM

    return save_causal_lm(
        out,
        MixtralConfig,
        MixtralForCausalLM,
        seed=seed,
        intermediate_size=256,
        num_key_value_heads=1,
        head_dim=64,
        num_local_experts=4,
        num_experts_per_tok=2,
        sliding_window=None,
        max_position_embeddings=MAX_MODEL_LEN,
    )


def build_falcon(out: Path, *, seed: int = 0) -> Path:
    """A Falcon with the new decoder architecture (Falcon-40B/180B style: grouped KV heads)."""
    from transformers import FalconConfig, FalconForCausalLM

    return save_causal_lm(
        out,
        FalconConfig,
        FalconForCausalLM,
        seed=seed,
        num_kv_heads=1,
        new_decoder_architecture=True,
        parallel_attn=True,
        bias=False,
        alibi=False,
        max_position_embeddings=MAX_MODEL_LEN,
    )


# Whisper's control tokens after the language tokens, in the order the real vocabulary has them.
_WHISPER_TASK_TOKENS: Final = (
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
)
WHISPER_SAMPLE_RATE: Final = 16_000


def build_whisper(out: Path, *, seed: int = 0) -> Path:
    """A Whisper encoder-decoder with its processor: byte-level BPE plus Whisper's control tokens.

    The feature extractor keeps the real 80 mel bins and 30 s windows (3000 frames, so the
    encoder has 1500 positions): vLLM pads every upload to one window. The generation config
    carries the language and task token ids that Hugging Face's pipeline looks up.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    out.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(TOKENIZER_CORPUS, trainer)
    trained = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    tokenizer = WhisperTokenizer(vocab=trained["vocab"], merges=merges)
    languages = [f"<|{code}|>" for code in LANGUAGES]
    tokenizer.add_tokens(
        ["<|startoftranscript|>", *languages, *_WHISPER_TASK_TOKENS], special_tokens=True
    )
    token_id = tokenizer.convert_tokens_to_ids
    end, start = token_id("<|endoftext|>"), token_id("<|startoftranscript|>")
    features = WhisperFeatureExtractor(
        feature_size=80,
        sampling_rate=WHISPER_SAMPLE_RATE,
        hop_length=160,
        chunk_length=30,
        n_fft=400,
    )
    WhisperProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(str(out))
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=COMMON_CONFIG["hidden_size"],
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=end,
        bos_token_id=end,
        eos_token_id=end,
        decoder_start_token_id=start,
        # The defaults list ids of the real 51k vocabulary, beyond this one's end.
        begin_suppress_tokens=None,
        suppress_tokens=None,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start,
        eos_token_id=end,
        pad_token_id=end,
        bos_token_id=end,
        max_length=448,
        no_timestamps_token_id=token_id("<|notimestamps|>"),
        is_multilingual=True,
        lang_to_id={language: token_id(language) for language in languages},
        task_to_id={
            "transcribe": token_id("<|transcribe|>"),
            "translate": token_id("<|translate|>"),
        },
    )
    model.save_pretrained(str(out))
    return out


def sine_wav(seconds: float = 1.0, frequency: float = 440.0) -> bytes:
    """A 16 kHz mono 16-bit PCM WAV of a sine tone: a valid upload for the audio endpoints."""
    import numpy as np

    samples = np.arange(int(WHISPER_SAMPLE_RATE * seconds)) / WHISPER_SAMPLE_RATE
    pcm = (0.3 * np.sin(2 * np.pi * frequency * samples) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as output:
        output.setnchannels(1)
        output.setsampwidth(2)
        output.setframerate(WHISPER_SAMPLE_RATE)
        output.writeframes(pcm.tobytes())
    return buffer.getvalue()


def build_stable_diffusion(out: Path, *, seed: int = 0) -> Path:
    """A Stable Diffusion 1.x-layout pipeline (CLIP text encoder, UNet, VAE, DDIM), ~6.5 MB.

    The tokenizer is character-level (the byte alphabet, no merges) so no vocabulary needs
    training; 64x64 images take a fraction of a second per step on a CPU.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from tokenizers import pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in [*alphabet, *(f"{a}</w>" for a in alphabet)]:
        vocab[symbol] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(str(out))
    return out
