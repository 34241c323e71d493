"""The package's shape (docs/DESIGN.md, "Map"): stages import only the core and earlier stages, the
runtimes never import torch, and every command-line option explains itself."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import onebit
from onebit import cli

PACKAGE = Path(onebit.__file__).resolve().parent
STAGES = ("train", "compile", "run")  # pipeline order
# what each part of the package may import from onebit (the core is every top-level module)
ALLOWED = {"core": set(), "train": {"train"}, "compile": {"train", "compile"}, "run": {"run"}}
TORCH_FREE = ("core", "run")
ALIASES = ("run_c", "run_ort")  # thin `python -m` aliases kept for old scripts; they go through cli


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE).parts
    return rel[0] if len(rel) > 1 and rel[0] in STAGES else "core"


def _imports(path: Path) -> list[str]:
    """Every module named by an import statement, at any depth (lazy imports count too)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            if node.module == "onebit":
                names += [f"onebit.{a.name}" for a in node.names]
    return names


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if p.stem not in ALIASES or p.parent != PACKAGE)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_goes_up_the_pipeline(path):
    part = _part(path)
    for name in _imports(path):
        if name.startswith("onebit."):
            target = name.split(".")[1]
            if target in STAGES:
                assert target in ALLOWED[part], f"{path.relative_to(PACKAGE)} ({part}) imports {name}"
        if part in TORCH_FREE and path.name != "cli.py":
            assert name.split(".")[0] != "torch", f"{path.relative_to(PACKAGE)} imports torch"


@pytest.mark.parametrize("module", ["onebit.run.c", "onebit.run.ort", "onebit.run.reference", "onebit.format",
                                    "onebit.describe", "onebit.sampling", "onebit.textstream", "onebit.cli",
                                    "onebit.run_c", "onebit.run_ort"])
def test_runtime_side_loads_without_torch(module):
    code = (f"import sys, {module}; bad = sorted(m for m in sys.modules if m == 'torch' or "
            "m.startswith(('onebit.train', 'onebit.compile'))); print(bad)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", f"{module} pulls in {done.stdout.strip()}"


def _commands():
    return [(name, cli.main.get_command(click.Context(cli.main), name)) for name in cli.COMMANDS]


@pytest.mark.parametrize("name,command", _commands(), ids=[n for n in cli.COMMANDS])
def test_every_option_has_help_and_a_default(name, command):
    for param in command.params:
        if not isinstance(param, click.Option) or param.name == "help":
            continue
        assert param.help, f"onebit {name} {param.opts[0]} has no help text"
        shows_default = param.show_default or "[default:" in param.help or param.is_flag or param.required
        assert shows_default, f"onebit {name} {param.opts[0]} does not show its default"


def test_version_and_command_list():
    result = CliRunner().invoke(cli.main, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"onebit {onebit.__version__}"
    result = CliRunner().invoke(cli.main, ["--help"])
    assert result.exit_code == 0
    for name in ("train", "export", "sample", "inspect", "run", "run-ort", "plot"):
        assert f"  {name} " in result.output


def test_unknown_command_is_one_line():
    result = CliRunner().invoke(cli.main, ["bogus"])
    assert result.exit_code == 2 and "No such command 'bogus'" in result.output


def test_print_config_resolves_the_preset():
    result = CliRunner().invoke(cli.main, ["train", "--preset", "tiny", "--quant", "binary", "--lr", "0.002",
                                           "--set", "dim=64", "--print-config"])
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.output)
    assert cfg["quant"] == "binary" and cfg["lr"] == 0.002 and cfg["two_stage"] is True
    assert cfg["model"]["dim"] == 64 and cfg["model"]["ffn_dim"] == 1024 and cfg["model"]["quant"] == "binary"


def test_preset_defaults_are_shown_per_quant():
    result = CliRunner().invoke(cli.main, ["train", "--help"], terminal_width=200)
    two_stage = next(line for line in result.output.splitlines() if "--two-stage" in line)
    assert "tiny: ternary True, binary True, none False" in two_stage


@pytest.mark.parametrize("argv", [["-m", "onebit.run_c", "--help"], ["-m", "onebit.run_ort", "--help"],
                                  ["-m", "onebit.train", "--help"], ["-m", "onebit.cli", "run", "--help"]])
def test_old_entry_points_still_work(argv):
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True)
    assert done.returncode == 0 and "Usage:" in done.stdout, done.stderr


def test_console_scripts_import_their_stage_under_the_interrupt_guard():
    """Every per-stage console script goes through cli.stage_main, so Ctrl-C while torch imports is
    one line and exit 130 there too (the script's own module would import before any handler)."""
    import tomllib
    scripts = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]["scripts"]
    for script, target in scripts.items():
        if script in ("onebit", "onebit-run"):  # the group itself; the C CLI's launcher imports no stage
            continue
        module, attr = target.split(":")
        assert module == "onebit.cli" and attr.endswith("_script"), f"{script} -> {target}"
        assert getattr(cli, attr).__name__ == attr


def test_interrupt_during_a_stage_import_is_one_line(monkeypatch, capsys):
    def interrupted(name):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli.importlib, "import_module", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        cli.export_script()
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "error: interrupted\n"
