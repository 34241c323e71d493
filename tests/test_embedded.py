"""examples/embedded: a model compiled into a C program, run with a static arena and no malloc."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from onebit.sampling import SamplerConfig
from onebit.train.checkpoint import load_checkpoint, save_checkpoint
from onebit.train.sample import generate

pytestmark = pytest.mark.skipif(shutil.which("cc") is None or shutil.which("make") is None,
                                reason="the embedded example needs cc and make")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "embedded"


def test_embedded_example_matches_the_oracle_without_malloc(random_checkpoint, tmp_path):
    ckpt_dir = random_checkpoint(max_seq_len=64, tie_embeddings=False)
    ckpt = load_checkpoint(ckpt_dir)
    with torch.no_grad():  # a random head so that greedy decoding does not just repeat itself
        ckpt.model.head.weight.normal_(generator=torch.Generator().manual_seed(2))
    save_checkpoint(ckpt_dir, ckpt.model, ckpt.tokenizer, ckpt.meta)
    header = tmp_path / "model.h"
    subprocess.run([sys.executable, "-m", "onebit.compile.export", str(ckpt_dir), "-o", str(tmp_path / "m.1bit"),
                    "--emit-c-header", str(header), "--embed-dtype", "f32"],  # f32: token-exact past 40 tokens
                   check=True, capture_output=True)
    build = tmp_path / "build"
    done = subprocess.run(["make", "-C", str(EXAMPLE), f"MODEL={header}", f"BUILD={build}", "all",
                           f"{build}/embedded-trapped"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

    prompt = "First Citizen:\n"
    ids = ckpt.tokenizer.encode(prompt)
    # 15 + 150 tokens on a 64-token context: the loop slides (docs/SAMPLING.md), still without malloc
    for args, sampler in ((["150"], SamplerConfig(temperature=0.0)),
                          (["150", "0.9", "3"], SamplerConfig(temperature=0.9, seed=3))):
        expected = prompt + ckpt.tokenizer.decode(generate(ckpt.model, ids, 150, sampler))
        for binary in ("embedded", "embedded-trapped"):  # the trapped build aborts on any allocation
            run = subprocess.run([str(build / binary), prompt, *args], capture_output=True)
            assert run.returncode == 0, run.stderr.decode()
            assert run.stdout.decode() == expected

    # the trap is live: worker threads need allocations, and the trapped build refuses them
    threaded = subprocess.run([str(build / "embedded"), prompt, "40", "0", "0", "2"], capture_output=True)
    assert threaded.stdout.decode() == prompt + ckpt.tokenizer.decode(generate(ckpt.model, ids, 40,
                                                                               SamplerConfig(temperature=0.0)))
    trapped = subprocess.run([str(build / "embedded-trapped"), prompt, "40", "0", "0", "2"], capture_output=True)
    assert trapped.returncode != 0 and b"called: the embedded build must not allocate" in trapped.stderr
