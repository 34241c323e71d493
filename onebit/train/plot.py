"""onebit-plot: the loss curves of a run (metrics.csv) as a PNG."""

from __future__ import annotations

from pathlib import Path

import click

from onebit.atomic import atomic_write_bytes
from onebit.errors import OnebitError, cli_errors
from onebit.train.metrics import read_metrics

PLOT_FILE = "curves.png"


class PlotError(OnebitError):
    """The curves cannot be drawn."""


def plot_metrics(run_dir: Path, out: Path | None = None) -> Path:
    """Draw train and val loss (and the LR) from run_dir/metrics.csv; returns the PNG's path."""
    try:
        import matplotlib
    except ImportError:
        raise PlotError("plotting needs matplotlib (pip install 'onebit[dev]' or pip install matplotlib)") from None
    matplotlib.use("Agg")  # no display: only files
    import io

    import matplotlib.pyplot as plt

    rows = read_metrics(Path(run_dir) / "metrics.csv")
    if not rows:
        raise PlotError(f"{run_dir}/metrics.csv has no rows yet")
    steps = [r["step"] for r in rows]
    fig, loss_ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    loss_ax.plot(steps, [r["train_loss"] for r in rows], label="train loss", marker=".")
    loss_ax.plot(steps, [r["val_loss"] for r in rows], label="val loss", marker=".")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("cross-entropy (nats/token)")
    loss_ax.grid(alpha=0.3)
    if "lr" in rows[0]:
        lr_ax = loss_ax.twinx()
        lr_ax.plot(steps, [r["lr"] for r in rows], color="grey", alpha=0.5, linestyle="--", label="lr")
        lr_ax.set_ylabel("learning rate")
    loss_ax.legend(loc="upper right")
    loss_ax.set_title(f"{Path(run_dir).resolve().name}: final val loss {rows[-1]['val_loss']:.4f}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    out = Path(out) if out is not None else Path(run_dir) / PLOT_FILE
    atomic_write_bytes(out, buf.getvalue())
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help=f"PNG path [default: RUN_DIR/{PLOT_FILE}]")
@cli_errors
def main(run_dir: Path, out: Path | None) -> None:
    """Plot RUN_DIR/metrics.csv (train and val loss, learning rate) to a PNG."""
    click.echo(str(plot_metrics(run_dir, out)), err=True)


if __name__ == "__main__":
    main()
