"""`onebit inspect FILE`: validate a `.1bit` file and print its header, metadata and tensors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from onebit.errors import cli_errors
from onebit.format import OnebitFile, read_1bit


def describe(f: OnebitFile) -> str:
    """Header, metadata, tensor table and size totals, as `onebit inspect` prints them."""
    lines = [f"file: {f.path}", "header:"]
    lines += [f"  {key:<13}{value}" for key, value in f.header.items()]
    lines.append("metadata:")
    lines += ["  " + line for line in json.dumps(f.meta, indent=2).splitlines()]
    lines.append(f"tensors ({len(f.tensors)}):")
    lines.append(f"  {'name':<36}{'dtype':<6}{'shape':<14}{'file_off':>10}{'bytes':>10}  scale")
    by_dtype: dict[str, tuple[int, int]] = {}
    for t in f.tensors.values():
        shape = "x".join(str(d) for d in t.shape)
        scale = f"{t.scale:.6g}" if t.dtype in ("T2", "T1_6", "B1") else "-"
        lines.append(f"  {t.name:<36}{t.dtype:<6}{shape:<14}{t.offset:>10}{t.size:>10}  {scale}")
        n, size = by_dtype.get(t.dtype, (0, 0))
        by_dtype[t.dtype] = (n + math.prod(t.shape), size + t.size)
    lines.append("sizes:")
    for dtype, (n, size) in sorted(by_dtype.items()):
        lines.append(f"  {dtype:<6}{n:>12,} elements {size:>12,} bytes  {8 * size / n:6.3f} bits each")
    data = sum(t.size for t in f.tensors.values())
    lines.append(f"  tensor data {data:,} bytes; header, metadata, directory and padding "
                 f"{int(f.header['file_size']) - data:,} bytes; file {int(f.header['file_size']):,} bytes")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("path", type=click.Path(path_type=Path))
@cli_errors
def main(path: Path) -> None:
    """Validate a .1bit file and print its header, metadata and tensors."""
    click.echo(describe(read_1bit(path)))


if __name__ == "__main__":
    main()
