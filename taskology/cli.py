"""The ``taskology`` command: ``sim | train | eval | report | demo | bench | inspect``.

Each subcommand is a thin shell over a function in the package that owns the work; this module only
parses and checks arguments, turns errors into one line ``taskology: error: ...`` on stderr and an
exit status, and shows a traceback only with ``--debug``.

Exit status: 0 success, 1 internal error (a bug: rerun with ``--debug``), 2 user error (bad option,
config, data), 3 a part not available here (e.g. the CARLA client), 130 interrupted.

Example:
    $ taskology inspect data/sim            # summarise a dataset directory
    $ taskology train demo train.steps=200 tasks.depth.label_fraction=0.05
"""
from __future__ import annotations

import difflib
import importlib
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from taskology.errors import TaskologyError
from taskology.runtime import tune_malloc

EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130


#: command -> ``"module:function"`` that does its work. Imported only when the command runs, so the
#: command line starts fast; a plain table, so static tools (and a test) can follow every command.
COMMANDS: dict[str, str] = {
    "sim": "taskology.sim.command:sim_command",
    "train": "taskology.engine.command:train_command",
    "eval": "taskology.engine.command:eval_command",
    "report": "taskology.report.command:report_command",
    "demo": "taskology.demo:demo_command",
    "bench": "taskology.bench:run_benchmark",
    "inspect": "taskology.data.inspect:inspect_command",
}


def _target(command: str) -> Callable[..., Any]:
    """The function :data:`COMMANDS` names for ``command``, imported now."""
    module, function = COMMANDS[command].split(":")
    return getattr(importlib.import_module(module), function)


def _debug_requested(ctx: click.Context | None) -> bool:
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and isinstance(root.obj, dict) and root.obj.get("debug"))


class _Group(click.Group):
    """Runs subcommands with the project's error policy: one line per error, traceback with --debug."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,  # type: ignore[override]
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message())
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            click.echo(f"taskology: error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("taskology: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else 0)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name = click.utils.make_str(args[0]) if args else ""
        if args and self.get_command(ctx, name) is None and not name.startswith("-"):
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            known = f"did you mean '{close[0]}'?" if close else f"commands: {', '.join(self.list_commands(ctx))}"
            raise click.UsageError(f"no such command '{name}'; {known}", ctx)
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TaskologyError as exc:
            if _debug_requested(ctx):
                traceback.print_exc()
            click.echo(f"taskology: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("taskology: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no traceback
            if _debug_requested(ctx):
                traceback.print_exc()
            message = str(exc).splitlines()[0] if str(exc) else ""
            click.echo(f"taskology: internal error: {type(exc).__name__}: {message} "
                       "(rerun with --debug for a traceback)", err=True)
            sys.exit(EXIT_INTERNAL)


# ------------------------------------------------------------------------------- argument checks


def _check_camera(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from taskology.config import parse_camera_hw

    try:
        parse_camera_hw(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return value


def _check_cluster(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from taskology.config import parse_cluster_address

    try:
        return parse_cluster_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _sim_out(ctx: click.Context, param: click.Parameter, value: str) -> Path | str:
    """``--out`` of sim as a Path; a URL (``s3://...``) stays text for the sim command to judge."""
    return value if "://" in value else Path(value)


def _check_overrides(ctx: click.Context, param: click.Parameter | None, values: tuple[str, ...]) -> tuple[str, ...]:
    """Dotted overrides only: a stray ``--option`` lands here because train accepts free arguments."""
    for value in values:
        if value.startswith("-"):
            where = " (it is an option of taskology itself: taskology --debug train ...)" if value == "--debug" else ""
            raise click.UsageError(f"No such option '{value}'{where}.", ctx)
        if "=" not in value:
            raise click.BadParameter(f"expected KEY=VALUE like train.steps=200; found {value!r}", ctx, param,
                                     param_hint="OVERRIDES")
    return values


def _check_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None and str(value).startswith("-"):
        _check_overrides(ctx, param, (str(value),))  # a stray option took CONFIG's place
    return value


def _param(name: str) -> click.Parameter | None:
    """The current command's parameter ``name`` (for error messages)."""
    return next((p for p in click.get_current_context().command.params if p.name == name), None)


# ------------------------------------------------------------------------------------- commands


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="taskology")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Train many perception networks together, tied by consistency relations.

    Typical flow: `taskology sim` makes data, `taskology train` trains the tasks (alone or
    collectively, in-process or on a Dask cluster), `taskology eval` / `report` measure and show the
    result. `taskology demo` does all of it on a laptop CPU.

    \b
    Examples:
      taskology sim --out data/sim --sequences 8
      taskology train demo train.steps=200 --cluster none
      taskology demo
      taskology COMMAND --help        # options and an example for each command

    Exit status: 0 ok, 1 internal error, 2 user error, 3 not available here, 130 interrupted.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    tune_malloc()  # the same allocator settings as the Dask workers (in-process runs are the reference)


@cli.command()
@click.option("--out", "out", type=click.Path(file_okay=False), default="data/sim", callback=_sim_out,
              show_default=True, help="Output directory for the HDF5 shards (one per sequence); with --cluster, "
                                      "a folder every worker sees at this path.")
@click.option("--sequences", type=click.IntRange(min=1), default=4, show_default=True,
              help="Number of sequences (shards).")
@click.option("--frames", type=click.IntRange(min=1), default=20, show_default=True, help="Frames per sequence.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="World seed; same seed, same shards.")
@click.option("--camera", "camera", default="64x208", show_default=True, callback=_check_camera,
              help="Camera size HxW in pixels.")
@click.option("--lidar-beams", type=click.IntRange(0, 128), default=32, show_default=True,
              help="LiDAR beams (0 disables LiDAR).")
@click.option("--backend", type=click.Choice(["embedded", "carla"]), default="embedded", show_default=True,
              help="Renderer: the embedded ray caster, or a CARLA server.")
@click.option("--carla-host", default="127.0.0.1:2000", show_default=True,
              help="CARLA server HOST:PORT (a comma list: one server per worker).")
@click.option("--ego-speed", "ego_speed", type=(click.FloatRange(0, 40, min_open=True), click.FloatRange(0, 40)),
              default=(5.0, 9.0), show_default=True, help="MIN MAX cruising speed of the ego vehicle, m/s.")
@click.option("--preview", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write a PNG of one frame (rgb, depth, normals, semantic, LiDAR BEV) instead of shards.")
@click.option("--cluster", default=None, callback=_check_cluster,
              help="Simulate on Dask workers, one sequence per task: local (a LocalCluster here) or "
                   "tcp://HOST:PORT / tls://HOST:PORT of a scheduler. Default: in this process.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes of --cluster local (default: one per core, at most one per sequence).")
@click.option("--tls-ca-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="CA certificate (PEM) of a tls:// cluster.")
@click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="This client's certificate (PEM) for a tls:// cluster.")
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="This client's private key (PEM) for a tls:// cluster.")
def sim(**kwargs: Any) -> None:
    """Generate simulated driving sequences as HDF5 shards.

    Rerunning with the same settings skips shards that already exist (and redoes partial ones). With
    --cluster the sequences are simulated on Dask workers; the shards hold the same data.

    \b
    Examples:
      taskology sim --out data/sim --sequences 8 --frames 40 --camera 64x208
      taskology sim --out data/slow --ego-speed 2 5      # a slower ego vehicle
      taskology sim --out data/big --sequences 64 --cluster local --workers 2
      taskology sim --out /shared/sim --sequences 512 --cluster tcp://10.0.0.5:8786
      taskology sim --preview frame.png
    """
    _target("sim")(**kwargs)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("config", type=click.Path(path_type=Path, dir_okay=False), required=False,
                callback=_check_config)
@click.argument("overrides", nargs=-1, callback=_check_overrides)
@click.option("--cluster", default=None, callback=_check_cluster,
              help="none (in-process), local (LocalCluster, default) or tcp://HOST:PORT / tls://HOST:PORT "
                   "of a scheduler. Overrides cluster.address of CONFIG.")
@click.option("--run-dir", type=click.Path(path_type=Path, dir_okay=True, file_okay=False), default=None,
              help="Where the run writes everything.")
@click.option("--resume", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Continue the run in this directory.")
def train(**kwargs: Any) -> None:
    """Train the tasks of an experiment CONFIG (YAML), with dotted OVERRIDES like train.steps=200.

    CONFIG is a YAML file or the name of a shipped preset (demo, default, consistency, consistency-gpu:
    taskology/configs/); without it the defaults (the default preset) apply. CONFIG and OVERRIDES are checked
    before anything starts: a typo in a key is an error naming the key and the allowed ones.

    \b
    Examples:
      taskology train demo train.steps=200 tasks.depth.label_fraction=0.05
      taskology train my-experiment.yaml train.mode=alone --cluster none --run-dir runs/alone
      taskology train --resume runs/demo
    """
    config = kwargs.get("config")
    if config is not None and "=" in str(config) and not config.exists():
        # `taskology train train.steps=5`: without CONFIG the first override took its place
        kwargs["overrides"] = _check_overrides(click.get_current_context(), _param("overrides"),
                                               (str(config), *kwargs["overrides"]))
        kwargs["config"] = None
    if kwargs.get("resume") is None and (kwargs.get("config") is not None or kwargs.get("overrides")):
        from taskology.config import load_config

        load_config(kwargs.get("config"), kwargs.get("overrides") or ())  # raises ConfigError early
        # (with --resume the overrides apply to the run's saved config; train_command checks them)
    _target("train")(**kwargs)


@cli.command(name="eval")
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--split", default="test", show_default=True, help="Split to evaluate on.")
def eval_(**kwargs: Any) -> None:
    """Evaluate the checkpoints of RUN_DIR on held-out sequences.

    \b
    Example:
      taskology eval runs/demo --split test
    """
    _target("eval")(**kwargs)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
def report(**kwargs: Any) -> None:
    """Write RUN_DIR/report/ (metric tables, loss curves, staleness, PNG gallery).

    \b
    Example:
      taskology report runs/demo
    """
    _target("report")(**kwargs)


@cli.command()
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("runs/demo"),
              show_default=True, help="Run directory of the demo.")
@click.option("--cluster", default="local", show_default=True, callback=_check_cluster,
              help="none, local, tcp://HOST:PORT or tls://HOST:PORT.")
def demo(**kwargs: Any) -> None:
    """Simulate data, train the six tasks alone and collectively, evaluate and report (CPU, minutes).

    \b
    Examples:
      taskology demo
      taskology demo --out runs/demo --cluster none
    """
    _target("demo")(**kwargs)


@cli.command()
@click.argument("name", required=False)
@click.option("--quick", is_flag=True, help="Small sizes and few repeats (a smoke run, not a result).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("benchmarks/results"),
              show_default=True, help="Where NAME.json and NAME.md are written.")
@click.option("--config", "config", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Preset file or shipped preset name for benchmarks that train (consistency): results go to "
                   "OUT/<preset name>.*")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a preset value (repeatable): results go to OUT/<name>-<overrides>.*")
@click.option("--steps", type=click.IntRange(min=1), default=None, metavar="N",
              help="Training steps per task for a benchmark with fixed sizes (staleness: a longer run, the same arms).")
@click.option("--seeds", type=click.IntRange(min=2), default=None, metavar="N",
              help="Seeds 0..N-1 instead of a benchmark's own seed list (staleness: 4).")
@click.option("--runs-dir", type=click.Path(path_type=Path, file_okay=False), default=None, metavar="DIR",
              help="Keep each run's folder in DIR and reuse runs already finished there (consistency: go on "
                   "after a stop).")
@click.option("--rerun", multiple=True, metavar="FRACTION/ARM",
              help="With --runs-dir: train these runs again even if finished, e.g. 0.02/collective (repeatable).")
@click.option("--index", is_flag=True,
              help="Write OUT/../README.md, the table of every benchmark's current result in OUT (no run).")
def bench(name: str | None, quick: bool, out: Path, config: Path | None, overrides: tuple[str, ...],
          steps: int | None, seeds: int | None, runs_dir: Path | None, rerun: tuple[str, ...], index: bool) -> None:
    """Run benchmark NAME and write OUT/NAME.json and OUT/NAME.md. Without NAME, list them.

    \b
    Examples:
      taskology bench                 # list the benchmarks
      taskology bench geometry --quick
      taskology bench consistency
      taskology bench consistency --set 'train.seeds=[5]'
      taskology bench staleness --steps 1600
      taskology bench staleness --seeds 12
      taskology bench consistency --runs-dir runs/b --rerun 0.02/collective
      taskology bench --index         # rewrite benchmarks/README.md from benchmarks/results/*.json
    """
    if index:
        if name is not None:
            raise click.UsageError("--index writes the table of the results; it runs no benchmark", None)
        from taskology.bench.index import write_index

        click.echo(f"wrote {write_index(out)}")
        return
    if name is None:
        from taskology.bench import BENCHMARKS

        for bench_name in sorted(BENCHMARKS):
            click.echo(bench_name)
        return
    _target("bench")(name, quick=quick, out_dir=out, config=config, overrides=overrides, steps=steps,
                  runs_dir=runs_dir, rerun=rerun, seeds=seeds)


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--png", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write a PNG of one frame (rgb, depth, normals, semantic, LiDAR BEV).")
@click.option("--frame", type=click.IntRange(min=0), default=0, show_default=True, help="Frame shown by --png.")
def inspect(**kwargs: Any) -> None:
    """Summarise a shard or a dataset directory: layers, shapes, frames, splits, checksums.

    \b
    Examples:
      taskology inspect data/sim
      taskology inspect data/sim/seq0000.h5 --png frame.png --frame 3
    """
    _target("inspect")(**kwargs)


# Each command knows -h itself, not only through the group's context: click caches a command's help option
# the first time it is built, so a command once run on its own (a test, an embedding program) would lose -h.
for _command in cli.commands.values():
    _command.context_settings.setdefault("help_option_names", ["-h", "--help"])


def main(args: Sequence[str] | None = None) -> None:
    """Console entry point (``taskology``, ``python -m taskology``)."""
    cli.main(args=args, prog_name="taskology")


if __name__ == "__main__":
    main()
