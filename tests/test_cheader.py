"""--emit-c-header: the header compiles as strict C99 and its array holds the .1bit file's bytes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from onebit.compile.cheader import CHeaderError, c_header, check_c_name, hex_body
from onebit.compile.export import ExportOptions, export_1bit
from onebit.format import read_1bit

CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler")

DUMP_C = r"""
#include <stdint.h>
#include <stdio.h>
#include "model.h"

int main(int argc, char **argv) {
    FILE *f;
    if (argc != 2) return 2;
    f = fopen(argv[1], "wb");
    if (!f || fwrite(NAME, 1, sizeof NAME, f) != sizeof NAME || fclose(f)) return 3;
    if ((uintptr_t)NAME % 64) return 4;
    printf("%d %d %d %d %d %d %d %d %ld\n", PREFIX_DIM, PREFIX_N_LAYERS, PREFIX_N_HEADS, PREFIX_N_KV_HEADS,
           PREFIX_HEAD_DIM, PREFIX_FFN_DIM, PREFIX_VOCAB_SIZE, PREFIX_MAX_SEQ_LEN, (long)PREFIX_SIZE);
    return 0;
}
"""
# A second translation unit that includes the header without using the array: no warning either.
OTHER_C = '#include "model.h"\nint other(void) { return 0; }\n'


@pytest.fixture(scope="module")
def exported(tmp_path_factory, random_checkpoint) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("cheader")
    ckpt_dir = random_checkpoint(n_kv_heads=1, pos="learned")
    export_1bit(ckpt_dir, out / "m.1bit", ExportOptions(pack="t1.6"), c_header=out / "model.h", c_name="tiny_lm")
    return out / "m.1bit", out / "model.h"


@needs_cc
def test_header_compiles_and_holds_the_file(exported, tmp_path):
    model, header = exported
    shutil.copy(header, tmp_path / "model.h")
    source = DUMP_C.replace("NAME", "tiny_lm").replace("PREFIX", "TINY_LM")
    (tmp_path / "dump.c").write_text(source)
    (tmp_path / "other.c").write_text(OTHER_C)
    build = subprocess.run([CC, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-o", "dump",
                            "dump.c", "other.c"], cwd=tmp_path, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(tmp_path / "dump"), "out.bin"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.returncode
    assert (tmp_path / "out.bin").read_bytes() == model.read_bytes()
    cfg = read_1bit(model).meta["config"]
    expected = [cfg["dim"], cfg["n_layers"], cfg["n_heads"], cfg["n_kv_heads"], cfg["dim"] // cfg["n_heads"],
                cfg["ffn_dim"], cfg["vocab_size"], cfg["max_seq_len"], model.stat().st_size]
    assert [int(v) for v in run.stdout.split()] == expected


def test_header_structure(exported):
    model, header = exported
    text = header.read_text()
    assert text.count("#ifndef TINY_LM_H") == 1 and text.rstrip().endswith("#endif /* TINY_LM_H */")
    assert "__attribute__((aligned(64)" in text and "static const unsigned char tiny_lm[TINY_LM_SIZE]" in text
    assert f"#define TINY_LM_SIZE {model.stat().st_size}" in text


@pytest.mark.parametrize("n", [1, 15, 16, 17, 1000])
def test_hex_body_is_every_byte_in_order(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    body = hex_body(data).decode()
    values = [int(v, 16) for v in body.replace("\n", "").replace(" ", "").split(",") if v]
    assert bytes(values) == data
    assert all(line.count(",") <= 16 for line in body.splitlines())


def test_fast_for_multi_megabyte_models():
    data = np.random.default_rng(0).integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()
    text = c_header(data, dict(dim=8, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=16, vocab_size=5, max_seq_len=4))
    assert text.count(b"0x") == len(data)


@pytest.mark.parametrize("name", ["", "1model", "my-model", "a b", "x" * 64])
def test_bad_c_names(name):
    with pytest.raises(CHeaderError):
        check_c_name(name)
