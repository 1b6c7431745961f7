"""The ``taskology`` command: ``sim | train | eval | report | demo | bench | inspect``.

Each subcommand is a thin shell over a function in the package that owns the work; this module only
parses arguments, turns :class:`~taskology.errors.TaskologyError` into one clear line and a non-zero
exit, and shows a traceback only with ``--debug``.

Example:
    $ taskology inspect data/sim            # summarise a dataset directory
    $ taskology train configs/demo.yaml train.steps=200 tasks.depth.label_fraction=0.05
"""
from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import click

from taskology.errors import NotYetAvailable, TaskologyError


def _target(module: str, function: str, issue: int) -> Callable[..., Any]:
    """Import ``module.function``; a missing module means the command lands in a later issue."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise NotYetAvailable(f"this command is not implemented yet (it lands with issue #{issue})") from exc
        raise
    try:
        return getattr(mod, function)
    except AttributeError as exc:
        raise NotYetAvailable(f"this command is not implemented yet (it lands with issue #{issue})") from exc


class _Group(click.Group):
    """Runs subcommands with the project's error policy."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TaskologyError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(f"taskology: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("taskology: interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no traceback
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(f"taskology: internal error: {type(exc).__name__}: {exc} (rerun with --debug for a traceback)",
                       err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="taskology")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Train many perception networks together, tied by consistency relations.

    Typical flow: `taskology sim` makes data, `taskology train` trains the tasks (alone or
    collectively, in-process or on a Dask cluster), `taskology eval` / `report` measure and show the
    result. `taskology demo` does all of it on a laptop CPU.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@cli.command()
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("data/sim"), show_default=True,
              help="Output directory for the HDF5 shards (one per sequence).")
@click.option("--sequences", type=int, default=4, show_default=True, help="Number of sequences (shards).")
@click.option("--frames", type=int, default=20, show_default=True, help="Frames per sequence.")
@click.option("--seed", type=int, default=0, show_default=True, help="World seed; same seed, same shards.")
@click.option("--camera", "camera", default="64x208", show_default=True, help="Camera size HxW in pixels.")
@click.option("--lidar-beams", type=int, default=32, show_default=True, help="LiDAR beams (0 disables LiDAR).")
@click.option("--backend", type=click.Choice(["embedded", "carla"]), default="embedded", show_default=True,
              help="Renderer: the embedded ray caster, or a CARLA server.")
@click.option("--carla-host", default="127.0.0.1:2000", show_default=True, help="CARLA server HOST:PORT.")
@click.option("--preview", type=click.Path(path_type=Path), default=None,
              help="Write a PNG of one frame (rgb, depth, normals, semantic, LiDAR BEV) instead of shards.")
def sim(**kwargs: Any) -> None:
    """Generate simulated driving sequences as HDF5 shards."""
    _target("taskology.sim.command", "sim_command", 4)(**kwargs)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("config", type=click.Path(path_type=Path), required=False)
@click.argument("overrides", nargs=-1)
@click.option("--cluster", default=None,
              help="none (in-process), local (LocalCluster, default) or tcp://HOST:PORT of a scheduler.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None, help="Where the run writes everything.")
@click.option("--resume", type=click.Path(path_type=Path), default=None, help="Continue the run in this directory.")
def train(**kwargs: Any) -> None:
    """Train the tasks of an experiment CONFIG (YAML), with dotted OVERRIDES like train.steps=200."""
    _target("taskology.engine.command", "train_command", 5)(**kwargs)


@cli.command(name="eval")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True, help="Split to evaluate on.")
def eval_(**kwargs: Any) -> None:
    """Evaluate the checkpoints of RUN_DIR on held-out sequences."""
    _target("taskology.engine.command", "eval_command", 5)(**kwargs)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
def report(**kwargs: Any) -> None:
    """Write RUN_DIR/report/ (metric tables, loss curves, staleness, PNG gallery)."""
    _target("taskology.engine.report", "report_command", 6)(**kwargs)


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True,
              help="Run directory of the demo.")
@click.option("--cluster", default="local", show_default=True, help="none, local or tcp://HOST:PORT.")
def demo(**kwargs: Any) -> None:
    """Simulate data, train the camera tasks alone and collectively, evaluate and report (CPU, minutes)."""
    _target("taskology.engine.demo", "demo_command", 6)(**kwargs)


@cli.command()
@click.argument("name", required=False)
@click.option("--quick", is_flag=True, help="Small sizes and few repeats (a smoke run, not a result).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("benchmarks/results"), show_default=True,
              help="Where NAME.json and NAME.md are written.")
def bench(name: str | None, quick: bool, out: Path) -> None:
    """Run benchmark NAME and write OUT/NAME.json and OUT/NAME.md. Without NAME, list them."""
    from taskology.bench import BENCHMARKS, run_benchmark

    if name is None:
        for bench_name in sorted(BENCHMARKS):
            click.echo(bench_name)
        return
    run_benchmark(name, quick=quick, out_dir=out)


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--png", type=click.Path(path_type=Path), default=None,
              help="Also write a PNG of one frame (rgb, depth, normals, semantic, LiDAR BEV).")
@click.option("--frame", type=int, default=0, show_default=True, help="Frame shown by --png.")
def inspect(**kwargs: Any) -> None:
    """Summarise a shard or a dataset directory: layers, shapes, frames, splits, checksums."""
    _target("taskology.data.inspect", "inspect_command", 2)(**kwargs)


def main() -> None:
    cli(prog_name="taskology")


if __name__ == "__main__":
    main()
