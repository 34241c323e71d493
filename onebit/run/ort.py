"""Generate with onnxruntime from an exported folder: `onebit run-ort --model out/ ...`.

The decode loop and the sampler are onebit.train.sample's (docs/SAMPLING.md), so for equal logits the
tokens equal onebit-sample's. stdout carries the prompt and the generated text only, streamed
through an incremental UTF-8 decoder; statistics go to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import click
import numpy as np

from onebit.chat_template import chat_prompt, eos_ids
from onebit.config import ModelConfig
from onebit.errors import OnebitError, cli_errors
from onebit.onnx_files import CONFIG_PROP, GENERATION_PROP, GRAPH_FILES, TOKENIZER_FILE
from onebit.sampling import SamplerConfig, check_request, decode_loop
from onebit.textstream import TextStream, sampler_options, stream_bytes

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class OrtError(OnebitError):
    """An exported folder or a provider that onnxruntime cannot use."""


class OrtDecoder:
    """One onnxruntime session over an exported decoder graph, with the KV-cache as numpy arrays."""

    def __init__(self, model_dir: Path, graph: str = "native", provider: str = "cpu", threads: int = 0):
        import onnxruntime as ort

        if graph not in GRAPH_FILES:
            raise OrtError(f"graph must be one of {', '.join(GRAPH_FILES)}, got {graph!r}")
        if provider not in PROVIDERS:
            raise OrtError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
        path = Path(model_dir) / GRAPH_FILES[graph]
        if not path.is_file():
            raise OrtError(f"{path} not found (export with: onebit-export CHECKPOINT --format onnx -o {model_dir})")
        if PROVIDERS[provider] not in ort.get_available_providers():
            raise OrtError(f"onnxruntime {ort.__version__} has no {PROVIDERS[provider]} here "
                           f"(available: {', '.join(ort.get_available_providers())}); "
                           "install onnxruntime-gpu with a matching CUDA for --provider cuda")
        try:  # onnxruntime would say only "system error number 13"
            with open(path, "rb"):
                pass
        except OSError as e:
            raise OrtError(f"{path}: {e.strerror or e}") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=[PROVIDERS[provider]])
        except Exception as e:  # onnxruntime raises its own exception types with long messages
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise OrtError(f"{path}: onnxruntime cannot load it ({first})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if CONFIG_PROP not in meta:
            raise OrtError(f"{path}: not a onebit export (no onebit.config metadata)")
        self.cfg = ModelConfig.from_dict(json.loads(meta[CONFIG_PROP]))
        # an imported model's BOS, EOS ids and chat template (models trained here have none)
        self.generation: dict = json.loads(meta.get(GENERATION_PROP, "{}"))
        self.provider = provider

    def empty_past(self, batch: int = 1) -> list[np.ndarray]:
        cfg = self.cfg
        return [np.zeros((batch, cfg.n_kv_heads, 0, cfg.head_dim), np.float32) for _ in range(2 * cfg.n_layers)]

    def forward(self, input_ids: np.ndarray, past: list[np.ndarray], attention_mask: np.ndarray | None = None,
                position_ids: np.ndarray | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits [B, T, vocab] and the new cache; the mask and positions default to no padding."""
        batch, t = input_ids.shape
        start = past[0].shape[2]
        if attention_mask is None:
            attention_mask = np.ones((batch, start + t), np.int64)
        if position_ids is None:
            position_ids = np.broadcast_to(np.arange(start, start + t, dtype=np.int64), (batch, t))
        feeds = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64),
                 "position_ids": np.ascontiguousarray(position_ids, dtype=np.int64)}
        for i in range(self.cfg.n_layers):
            feeds[f"past_key_values.{i}.key"] = past[2 * i]
            feeds[f"past_key_values.{i}.value"] = past[2 * i + 1]
        out = self.session.run(None, feeds)
        return out[0], out[1:]


def generate_ort(decoder: OrtDecoder, prompt_ids: list[int], max_new_tokens: int, sampler: SamplerConfig,
                 on_token: Callable[[int], None] | None = None) -> list[int]:
    """onebit.train.sample.generate with onnxruntime as the model: same checks, loop, sampler and
    end-of-sequence stop."""
    check_request(decoder, prompt_ids, max_new_tokens)

    def forward(tokens: list[int], past, _pos: int):
        logits, past = decoder.forward(np.array([tokens], np.int64), decoder.empty_past() if past is None else past)
        return logits[0, -1], past

    return decode_loop(forward, decoder.cfg.max_seq_len, prompt_ids, max_new_tokens, sampler, on_token,
                       eos_ids(decoder.generation))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help="Folder written by onebit export --format onnx.")
@sampler_options
@click.option("--provider", type=click.Choice(list(PROVIDERS)), default="cpu", show_default=True,
              help="onnxruntime execution provider (cuda has never been run in this project's tests).")
@click.option("--graph", type=click.Choice(list(GRAPH_FILES)), default="native", show_default=True,
              help="native = MatMulNBits (model.onnx), web = standard ops (model_web.onnx)")
@click.option("--threads", type=int, default=1, show_default=True, help="intra-op threads, 0 = onnxruntime's choice")
@cli_errors
def main(model_dir: Path, prompt: str, n: int, sampler: SamplerConfig, chat: bool, provider: str, graph: str,
         threads: int) -> None:
    """Continue PROMPT with an exported ONNX model on onnxruntime."""
    from onebit.tokenizer import Tokenizer

    if threads < 0:
        raise OrtError(f"threads must be >= 0, got {threads}")
    if not Path(model_dir).is_dir():
        raise OrtError(f"model folder {model_dir} not found")
    tokenizer = Tokenizer.load(Path(model_dir) / TOKENIZER_FILE)
    decoder = OrtDecoder(model_dir, graph, provider, threads)
    if tokenizer.vocab_size != decoder.cfg.vocab_size:
        raise OrtError(f"tokenizer.json has {tokenizer.vocab_size} tokens but the model {decoder.cfg.vocab_size}")
    if chat:
        prompt = chat_prompt(decoder.generation, prompt)
    prompt_ids = tokenizer.encode(prompt)
    check_request(decoder, prompt_ids, n)  # before any output: an error leaves stdout empty

    stream = TextStream(prompt)
    eos = eos_ids(decoder.generation)
    generate_ort(decoder, prompt_ids, n, sampler,
                 on_token=lambda t: stream.write(stream_bytes(tokenizer.token_bytes(t), t, eos, sampler)))
    stream.close(len(prompt_ids), f"onnxruntime {graph} graph on {provider}")


if __name__ == "__main__":
    main()
