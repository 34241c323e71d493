"""Hugging Face fixtures made by the real libraries: tokenizers builds the tokenizer, transformers the model.

- `llama3_tokenizer`: a byte-level BPE trained by HF `tokenizers` with the pre-tokenizer of
  BitNet b1.58 2B4T (Llama-3's split regex, then ByteLevel without its own regex), its special
  tokens appended after the learned vocabulary, and a post-processor that prepends BOS.
- `save_hf_bitnet`: a small random `BitNetForCausalLM` saved by `save_pretrained`, either with
  latent weights (`autobitlinear`, online quantization) or in the 2B4T deployment form (uint8
  codes four to a byte, an inverse `weight_scale`, `bitlinear` class), made by transformers'
  own `replace_with_bitnet_linear` and `pack_weights`.

transformers' BitNet layers are wrapped in torch.compile; TORCHDYNAMO_DISABLE keeps the tests from
spending minutes compiling them (the eager code is the same math).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import torch  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

TRAIN_TEXT = [
    "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak.",
    "You are all resolved rather to die than to famish? Resolved. resolved.",
    "def main(argv):\n    return 0x1F + 12345 * 67\n\n\tprint('héllo wörld') # café naïve",
    "数据 模型 東京 ありがとう 🙂🚀 — “quotes” and 'apostrophes' it's we're I'll",
    "Numbers 1 22 333 4444 55555 and   spaces\r\n\r\nnewlines\n\n\n end.",
] * 20 + [
    "Thou art a villain, said the king; and all the lords replied: we are not! Wherefore? Because.",
    "The quick brown fox jumps over the lazy dog while 42 cats watch from 3 windows in 1999.",
    "return self.weight * x.to(dtype)  # scale, then cast\n    if value is None:\n        raise ValueError",
    "Über 100 Bücher für Kinder, déjà vu à la carte, señor niño, smörgåsbord, Ærø, Øresund.",
    "中文的句子，还有日本語の文章、そして한국어 문장도 있습니다。数字１２３と絵文字😀😃😄😁.",
] * 10


def llama3_tokenizer(vocab_size: int = 400) -> Tokenizer:
    """The 2B4T-style tokenizer: at most vocab_size tokens (fewer when the text runs out of merges),
    the special tokens last."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TRAIN_TEXT, trainer)
    tok.add_special_tokens(SPECIALS)
    bos = tok.token_to_id(SPECIALS[0])
    tok.post_processor = processors.TemplateProcessing(single=f"{SPECIALS[0]} $A", pair=f"{SPECIALS[0]} $A $B",
                                                       special_tokens=[(SPECIALS[0], bos)])
    return tok


def save_tokenizer_files(tok: Tokenizer, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": SPECIALS[0], "eos_token": "<|eot_id|>", "chat_template": CHAT_TEMPLATE,
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 4096,
    }, indent=2))


def bitnet_config(vocab_size: int, **overrides):
    from transformers import BitNetConfig

    args = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                tie_word_embeddings=True, initializer_range=0.3, bos_token_id=vocab_size - len(SPECIALS),
                eos_token_id=[vocab_size - len(SPECIALS) + 1, vocab_size - 1])
    args.update(overrides)
    return BitNetConfig(**args)


def _randomize(model, seed: int) -> None:
    """Norms around 1 and larger embeddings, so that a runtime that skips one of them shows it."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
            elif "embed" in name or "lm_head" in name:
                p.copy_(torch.randn(p.shape, generator=gen))


def save_hf_bitnet(folder: Path, form: str, seed: int = 0, tokenizer: Tokenizer | None = None, **overrides):
    """A random BitNetForCausalLM in `form` ("latent" or "packed") saved with save_pretrained."""
    from transformers import BitNetForCausalLM, GenerationConfig
    from transformers.integrations.bitnet import BitLinear, pack_weights, replace_with_bitnet_linear
    from transformers.utils.quantization_config import BitNetQuantConfig

    tok = tokenizer or llama3_tokenizer()
    config = bitnet_config(tok.get_vocab_size(with_added_tokens=True), **overrides)
    online = BitNetQuantConfig(linear_class="autobitlinear", quantization_mode="online")
    config.quantization_config = online.to_dict()
    torch.manual_seed(seed)
    model = BitNetForCausalLM(config)
    _randomize(model, seed)
    if form == "packed":
        latent = {k: v.clone() for k, v in model.state_dict().items()}
        offline = BitNetQuantConfig(linear_class="bitlinear", quantization_mode="offline")
        config.quantization_config = offline.to_dict()
        model = BitNetForCausalLM(config)
        model.load_state_dict(latent)
        replace_with_bitnet_linear(model, modules_to_not_convert=["lm_head"], quantization_config=offline)
        for name, module in model.named_modules():
            if isinstance(module, BitLinear):
                w = latent[name + ".weight"].float()
                inverse = 1.0 / w.abs().mean().clamp(min=1e-5)  # transformers' WeightQuant
                codes = (w * inverse).round().clamp(-1, 1)
                module.weight = torch.nn.Buffer(pack_weights(codes.clone()))
                module.weight_scale = torch.nn.Buffer(inverse.reshape(1))
    elif form != "latent":
        raise ValueError(form)
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id)
    model.save_pretrained(folder)
    save_tokenizer_files(tok, folder)
    return folder


def hf_greedy(folder: Path, prompt: list[int], n: int, stop_at_eos: bool = False) -> list[int]:
    """transformers' own greedy generation from the saved folder (the new tokens only)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    kwargs = {} if stop_at_eos else {"eos_token_id": None}
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=0 if stop_at_eos else n,
                         do_sample=False, pad_token_id=0, **kwargs)
    return out[0, len(prompt):].tolist()
