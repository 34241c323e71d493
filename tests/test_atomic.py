"""Atomic writes (onebit/atomic.py): all or nothing, with the file mode open() would give."""

from pathlib import Path

import pytest

from onebit.atomic import atomic_path, atomic_write, atomic_write_text


def test_replaces_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def half_then_fail(f) -> None:
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_files_get_the_usual_mode_not_mkstemps_0600(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    with atomic_path(tmp_path / "atomic") as tmp:
        tmp.write_bytes(b"x")
    assert (tmp_path / "atomic").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_checkpoint_files_are_readable_by_others(random_checkpoint) -> None:
    for path in Path(random_checkpoint()).rglob("*"):
        assert path.stat().st_mode & 0o044, f"{path.name} is not readable by group/others"


# ---------------------------------------------------------------- folders: the ONNX export

def _tiny_export_inputs():
    import torch

    from onebit.config import ModelConfig
    from onebit.tokenizer import train_char_tokenizer
    from onebit.train.model import Transformer

    tokenizer = train_char_tokenizer("abc d\n")
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tokenizer.vocab_size, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=32,
                      max_seq_len=16)
    return Transformer(cfg), tokenizer


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("failure", [OSError("No space left on device"), KeyboardInterrupt()],
                         ids=["disk full", "Ctrl-C"])
def test_a_failed_onnx_export_leaves_nothing(tmp_path: Path, monkeypatch, failure: BaseException) -> None:
    """The graph is already written inside the temp folder when the tokenizer's write fails."""
    from onebit.compile.onnx_export import OnnxOptions, export_model

    model, tokenizer = _tiny_export_inputs()

    def fail(path) -> None:
        Path(path).write_text("{half")
        raise failure

    monkeypatch.setattr(tokenizer, "save", fail)
    with pytest.raises(type(failure)):
        export_model(model, tokenizer, tmp_path / "onnx", OnnxOptions(graphs=("native",)))
    assert list(tmp_path.iterdir()) == []  # no folder, no temp folder


def test_a_failed_onnx_export_keeps_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    from onebit.compile.onnx_export import OnnxOptions, export_model

    model, tokenizer = _tiny_export_inputs()
    out = tmp_path / "onnx"
    export_model(model, tokenizer, out, OnnxOptions(graphs=("native", "web")))
    before = _tree(out)
    assert set(before) == {"model.onnx", "model_web.onnx", "tokenizer.json", "tokenizer_config.json",
                           "genai_config.json"}
    monkeypatch.setattr(tokenizer, "save", lambda path: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        export_model(model, tokenizer, out, OnnxOptions(graphs=("native",)))
    assert _tree(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["onnx"]


def test_an_onnx_export_replaces_the_previous_one_whole(tmp_path: Path) -> None:
    """A web graph left from the previous export would not match the new model: it goes too."""
    from onebit.compile.onnx_export import OnnxOptions, export_model

    model, tokenizer = _tiny_export_inputs()
    out = tmp_path / "onnx"
    export_model(model, tokenizer, out, OnnxOptions(graphs=("native", "web")))
    written = export_model(model, tokenizer, out, OnnxOptions(graphs=("native",)))
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)
    assert "model_web.onnx" not in _tree(out)
    assert [p.name for p in tmp_path.iterdir()] == ["onnx"]
    plain = tmp_path / "plain"
    plain.mkdir()
    assert out.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not mkdtemp's 0700


def test_an_onnx_export_does_not_replace_a_folder_of_other_files(tmp_path: Path) -> None:
    from onebit.compile.onnx_export import OnnxExportError, OnnxOptions, export_model

    model, tokenizer = _tiny_export_inputs()
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OnnxExportError, match="not an ONNX export"):
        export_model(model, tokenizer, out, OnnxOptions(graphs=("native",)))
    assert _tree(out) == {"notes.txt": b"keep me"}
