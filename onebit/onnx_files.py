"""What an ONNX export folder holds: the contract between compile/onnx_export.py, which writes it,
and run/ort.py and the browser demo, which read it (docs/ONNX.md)."""

from __future__ import annotations

GRAPH_FILES = {"native": "model.onnx", "web": "model_web.onnx"}  # graph kind -> file in the folder
TOKENIZER_FILE = "tokenizer.json"
CONFIG_PROP = "onebit.config"  # model property holding ModelConfig as JSON
GRAPH_PROP = "onebit.graph"  # model property holding the graph kind
GENERATION_PROP = "onebit.generation"  # BOS, EOS ids and chat template as JSON (imported models only)
