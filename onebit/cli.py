"""`onebit`: one command for the whole pipeline, `onebit train | export | sample | inspect | run |
run-ort | chat | serve | plot`.

Each subcommand is the `main` of its stage's module, imported only when it runs, so that
`onebit run` and `onebit inspect` never import torch. The older console scripts (`onebit-train`,
`onebit-export`, ...) and `python -m onebit.run_c` import the same functions the same way (the
`*_script` entry points below).
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable

import click

import onebit

# name -> (module holding `main`, one-line summary shown by `onebit --help`), in pipeline order
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("onebit.train.trainer", "Train a model with quantization-aware training (PyTorch)."),
    "import": ("onebit.train.hf_import", "Import a Hugging Face BitNetForCausalLM folder as a checkpoint."),
    "plot": ("onebit.train.plot", "Plot a training run's loss and learning-rate curves."),
    "search": ("onebit.compile.search", "Find each layer's bit-width under a size budget, then fine-tune (mixed precision)."),
    "sample": ("onebit.train.sample", "Generate from a checkpoint with the PyTorch model (the oracle)."),
    "export": ("onebit.compile.export", "Compile a checkpoint into .1bit (and a C header) or ONNX."),
    "inspect": ("onebit.describe", "Validate a .1bit file and print its header, metadata and tensors."),
    "run": ("onebit.run.c", "Generate or score text with a .1bit model on the C runtime."),
    "run-ort": ("onebit.run.ort", "Generate with an exported ONNX model on onnxruntime."),
    "chat": ("onebit.run.chat", "Chat with a .1bit model in the terminal (C runtime)."),
    "serve": ("onebit.run.serve", "Serve a .1bit model: OpenAI-style API, chat page (C runtime)."),
}


def stage_main(name: str) -> click.Command:
    """The `main` of stage NAME, imported now; Ctrl-C during the import (torch takes seconds) is the
    tools' one line and exit 130, not a traceback."""
    try:
        return importlib.import_module(COMMANDS[name][0]).main
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


def _script(name: str) -> Callable[[], None]:
    """A console-script entry point that imports its stage under stage_main's guard."""

    def run() -> None:
        stage_main(name)()

    run.__name__ = run.__qualname__ = f"{name.replace('-', '_')}_script"
    return run


# the per-stage console scripts of pyproject.toml (onebit-train, onebit-export, ...)
train_script, sample_script, export_script, import_script, plot_script, search_script = map(
    _script, ("train", "sample", "export", "import", "plot", "search"))
run_script, run_ort_script, chat_script, serve_script = map(_script, ("run", "run-ort", "chat", "serve"))


class PipelineGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        command = stage_main(name)
        command.short_help = COMMANDS[name][1]
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # the summaries come from COMMANDS: listing them must not import every stage
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, summary) in COMMANDS.items()])


@click.group(cls=PipelineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(onebit.__version__, "--version", prog_name="onebit", message="%(prog)s %(version)s")
def main() -> None:
    """Train, compile and run 1-bit and ternary language models.

    The pipeline: `onebit train` -> `onebit export` -> `onebit run` (C runtime) or `onebit run-ort`
    (onnxruntime). `onebit COMMAND --help` describes each command's options and their defaults.
    """


if __name__ == "__main__":
    main()
