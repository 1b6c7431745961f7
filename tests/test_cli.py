"""The ``taskology`` command: help, exit codes, one-line errors, --debug, and the call-site contract.

The lazy targets (``taskology.cli.COMMANDS``: sim_command, train_command, ...) are replaced by fakes through
``sys.modules``, so these tests check the command line itself, not the work behind it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Callable

import pytest
from click.testing import CliRunner, Result

import taskology
from taskology.cli import COMMANDS as CLI_COMMANDS
from taskology.cli import cli
from taskology.errors import DataError, NotAvailable

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["sim", "train", "eval", "report", "demo", "bench", "inspect"]
#: command -> (module, function) the CLI calls lazily (its COMMANDS table, except bench's own listing).
TARGETS = {name: tuple(target.split(":")) for name, target in CLI_COMMANDS.items() if name != "bench"}
MINIMAL_ARGS = {"sim": [], "train": [], "eval": ["runs/x"], "report": ["runs/x"], "demo": [],
                "inspect": ["data/x"]}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="taskology")


def assert_one_error_line(result: Result, exit_code: int, *fragments: str) -> str:
    assert result.exit_code == exit_code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    assert lines[0].startswith("taskology: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def fake_target(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, Callable[..., Any] | None], list[dict]]:
    """Install a fake module for a command's lazy target; returns the list of recorded calls."""

    def install(command: str, behaviour: Callable[..., Any] | None = None) -> list[dict]:
        module_name, function = TARGETS[command]
        calls: list[dict] = []

        def target(**kwargs: Any) -> None:
            calls.append(kwargs)
            if behaviour is not None:
                behaviour(**kwargs)

        module = types.ModuleType(module_name)
        setattr(module, function, target)
        monkeypatch.setitem(sys.modules, module_name, module)
        return calls

    return install


# --------------------------------------------------------------------------------------------- help


def test_root_help_lists_every_command_and_explains_exit_codes() -> None:
    result = invoke("--help")
    assert result.exit_code == 0 and result.stderr == ""
    for command in COMMANDS:
        assert f"  {command} " in result.stdout
    assert "Examples:" in result.stdout and "Exit status" in result.stdout and "--debug" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_has_usage_and_an_example(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: taskology {command} ")
    assert "Example" in result.stdout
    assert f"taskology {command}" in result.stdout.split("Example", 1)[1]  # the example runs this command
    assert invoke(command, "-h").stdout == result.stdout


def test_no_arguments_shows_the_help() -> None:
    result = invoke()
    assert result.exit_code == 2 and "Usage: taskology" in result.stdout


def test_version_is_the_package_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"taskology, version {taskology.__version__}"


# ----------------------------------------------------------------------------------------- bad input


def test_unknown_command_suggests_the_close_one() -> None:
    assert_one_error_line(invoke("trian"), 2, "no such command 'trian'; did you mean 'train'?")
    assert_one_error_line(invoke("frobnicate"), 2, "no such command 'frobnicate'; commands: bench, demo, eval")


@pytest.mark.parametrize("args, fragments", [
    (["sim", "--sequences", "0"], ["'--sequences'", "0 is not in the range x>=1", "taskology sim --help"]),
    (["sim", "--frames", "many"], ["'--frames'", "'many' is not a valid integer"]),
    (["sim", "--camera", "64by208"], ["'--camera'", "expected a camera size 'HxW'"]),
    (["sim", "--camera", "0x208"], ["'--camera'", "camera sides must be in 1..4096"]),
    (["sim", "--lidar-beams", "129"], ["'--lidar-beams'", "129 is not in the range 0<=x<=128"]),
    (["sim", "--seed", "-1"], ["'--seed'"]),
    (["sim", "--backend", "unreal"], ["'--backend'", "'unreal' is not one of 'embedded', 'carla'"]),
    (["sim", "--colour"], ["--colour"]),  # click's own wording differs between versions
    (["demo", "--cluster", "tcp://nohost"], ["'--cluster'", "tcp://HOST:PORT"]),
    (["train", "--cluster", "remote"], ["'--cluster'", "expected none, local, tcp://HOST:PORT"]),
    (["train", "demo", "--clsuter", "none"], ["No such option '--clsuter'."]),
    (["train", "--clsuter", "none"], ["No such option '--clsuter'."]),
    (["train", "train.stpes=5"], ["override 'train.stpes=5': train.stpes: unknown key"]),
    (["train", "demo", "--debug"], ["No such option '--debug' (it is an option of taskology itself: taskology --debug train ...)."]),
    (["train", "demo", "steps"], ["OVERRIDES", "expected KEY=VALUE", "'steps'"]),
    (["inspect", "data/x", "--frame", "-2"], ["'--frame'"]),
    (["eval"], ["Missing argument 'RUN_DIR'"]),
    (["bench", "nosuchbench"], ["unknown benchmark 'nosuchbench'; available:", "geometry"]),
])
def test_bad_arguments_are_one_line_user_errors(args: list[str], fragments: list[str], fake_target) -> None:
    calls = {command: fake_target(command) for command in TARGETS}
    assert_one_error_line(invoke(*args), 2, *fragments)
    assert not any(calls.values()), "the command ran despite bad arguments"


def test_train_checks_the_config_before_calling_the_engine(fake_target, tmp_path: Path) -> None:
    calls = fake_target("train")
    line = assert_one_error_line(invoke("train", "demo", "train.stpes=3"), 2,
                                 "train.stpes: unknown key; allowed: steps, mode, seeds")
    assert line.startswith("taskology: error: override 'train.stpes=3': ")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  depth: {label_fraction: 0}\n")
    assert_one_error_line(invoke("train", str(bad)), 2, f"{bad}: tasks.depth.label_fraction: must be > 0")
    assert_one_error_line(invoke("train", str(tmp_path / "missing.yaml")), 2, "no such config file")
    assert calls == []


# ------------------------------------------------------------------------------- call-site contract


@pytest.mark.parametrize("command, args, expected", [
    ("sim", ["--out", "d", "--sequences", "2", "--frames", "3", "--seed", "4", "--camera", "32x96",
             "--lidar-beams", "0", "--backend", "carla", "--carla-host", "h:2000"],
     {"out": Path("d"), "sequences": 2, "frames": 3, "seed": 4, "camera": "32x96", "lidar_beams": 0,
      "backend": "carla", "carla_host": "h:2000", "preview": None, "ego_speed": (5.0, 9.0),
      "cluster": None, "workers": None, "tls_ca_file": None, "tls_cert": None, "tls_key": None}),
    ("sim", ["--ego-speed", "2", "12", "--preview", "p.png"],
     {"out": Path("data/sim"), "sequences": 4, "frames": 20, "seed": 0, "camera": "64x208", "lidar_beams": 32,
      "backend": "embedded", "carla_host": "127.0.0.1:2000", "preview": Path("p.png"), "ego_speed": (2.0, 12.0),
      "cluster": None, "workers": None, "tls_ca_file": None, "tls_cert": None, "tls_key": None}),
    ("sim", ["--cluster", "TLS://10.0.0.5:8786", "--tls-ca-file", "ca.pem", "--tls-cert", "c.pem", "--tls-key", "k.pem"],
     {"out": Path("data/sim"), "sequences": 4, "frames": 20, "seed": 0, "camera": "64x208", "lidar_beams": 32,
      "backend": "embedded", "carla_host": "127.0.0.1:2000", "preview": None, "ego_speed": (5.0, 9.0),
      "cluster": "tls://10.0.0.5:8786", "workers": None, "tls_ca_file": Path("ca.pem"), "tls_cert": Path("c.pem"),
      "tls_key": Path("k.pem")}),
    ("train", ["demo", "train.steps=3", "tasks.depth.lr=1e-3", "--cluster", "None", "--run-dir", "r"],
     {"config": Path("demo"), "overrides": ("train.steps=3", "tasks.depth.lr=1e-3"),
      "cluster": "none", "run_dir": Path("r"), "resume": None}),
    ("train", ["--resume", "runs/old"],
     {"config": None, "overrides": (), "cluster": None, "run_dir": None, "resume": Path("runs/old")}),
    ("train", ["--resume", "runs/old", "tasks.only_in_saved_run.lr=0.1"],  # checked against the saved config
     {"config": None, "overrides": ("tasks.only_in_saved_run.lr=0.1",), "cluster": None, "run_dir": None,
      "resume": Path("runs/old")}),
    ("train", ["train.steps=5", "train.mode=alone"],  # overrides without CONFIG
     {"config": None, "overrides": ("train.steps=5", "train.mode=alone"), "cluster": None, "run_dir": None,
      "resume": None}),
    ("eval", ["runs/x", "--split", "mediator"], {"run_dir": Path("runs/x"), "split": "mediator"}),
    ("report", ["runs/x"], {"run_dir": Path("runs/x")}),
    ("demo", [], {"out": Path("runs/demo"), "cluster": "local"}),
    ("demo", ["--out", "o", "--cluster", "tcp://127.0.0.1:8786"], {"out": Path("o"), "cluster": "tcp://127.0.0.1:8786"}),
    ("inspect", ["data/x", "--png", "f.png", "--frame", "3"], {"path": Path("data/x"), "png": Path("f.png"), "frame": 3}),
])
def test_commands_call_their_target_with_these_keywords(command: str, args: list[str], expected: dict,
                                                         fake_target) -> None:
    calls = fake_target(command)
    result = invoke(command, *args)
    assert result.exit_code == 0, result.output
    assert calls == [expected]


def test_sim_defaults_reach_the_target(fake_target) -> None:
    calls = fake_target("sim")
    assert invoke("sim").exit_code == 0
    assert calls == [{"out": Path("data/sim"), "sequences": 4, "frames": 20, "seed": 0, "camera": "64x208",
                      "lidar_beams": 32, "backend": "embedded", "carla_host": "127.0.0.1:2000", "preview": None,
                      "ego_speed": (5.0, 9.0), "cluster": None, "workers": None,
                      "tls_ca_file": None, "tls_cert": None, "tls_key": None}]
    from taskology.sim.config import WorldConfig  # the CLI's defaults are the default world's

    assert calls[0]["ego_speed"] == WorldConfig().ego_speed_mps


def test_bench_without_name_lists_the_benchmarks() -> None:
    from taskology.bench import BENCHMARKS

    result = invoke("bench")
    assert result.exit_code == 0 and result.stdout.split() == sorted(BENCHMARKS)


# ---------------------------------------------------------------------------------- error policy


def test_every_command_is_in_the_table_and_its_target_exists() -> None:
    """The COMMANDS table is the command line's map: every command has a row, every row names a function."""
    import importlib

    assert sorted(CLI_COMMANDS) == sorted(cli.commands)
    for command, target in CLI_COMMANDS.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), command


def test_a_broken_import_inside_the_target_is_not_called_not_implemented(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ModuleNotFoundError for a dependency of the target is a bug, not a missing command."""
    module = types.ModuleType("taskology.report.command")
    monkeypatch.setitem(sys.modules, "taskology.report.command", module)

    def broken(**_: Any) -> None:
        raise ModuleNotFoundError("No module named 'somedep'", name="somedep")

    module.report_command = broken
    result = invoke("report", "runs/x")
    assert result.exit_code == 1 and "internal error: ModuleNotFoundError" in result.stderr


@pytest.mark.parametrize("error, exit_code", [
    (DataError("data/x/seq0000.h5: camera/depth: expected float32, found float64"), 2),
    (NotAvailable("the CARLA backend is not available (No module named 'carla')"), 3),
])
def test_taskology_errors_from_a_target_are_one_line(error: Exception, exit_code: int, fake_target) -> None:
    def fail(**_: Any) -> None:
        raise error

    fake_target("inspect", fail)
    line = assert_one_error_line(invoke("inspect", "data/x"), exit_code)
    assert line == f"taskology: error: {error}"


def test_an_unexpected_exception_is_one_line_and_debug_shows_the_traceback(fake_target) -> None:
    def fail(**_: Any) -> None:
        raise ZeroDivisionError("division by zero\nsecond line")

    fake_target("report", fail)
    result = invoke("report", "runs/x")
    assert result.exit_code == 1
    assert result.stderr.strip() == ("taskology: internal error: ZeroDivisionError: division by zero "
                                     "(rerun with --debug for a traceback)")
    debug = invoke("--debug", "report", "runs/x")
    assert debug.exit_code == 1
    assert "Traceback (most recent call last)" in debug.stderr and "in fail" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("taskology: internal error: ZeroDivisionError")


def test_debug_shows_the_traceback_of_user_errors_too(fake_target) -> None:
    def fail(**_: Any) -> None:
        raise DataError("broken shard")

    fake_target("inspect", fail)
    result = invoke("--debug", "inspect", "data/x")
    assert result.exit_code == 2 and "Traceback" in result.stderr and "in fail" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "taskology: error: broken shard"


def test_keyboard_interrupt_exits_130(fake_target) -> None:
    def interrupt(**_: Any) -> None:
        raise KeyboardInterrupt

    fake_target("demo", interrupt)
    result = invoke("demo")
    assert result.exit_code == 130 and result.stderr.strip() == "taskology: interrupted"


# ------------------------------------------------------------------------------ real processes


def _run(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(list(argv), capture_output=True, text=True, cwd=ROOT, timeout=120, env=env)


def test_console_script_help_and_version() -> None:
    script = Path(sys.executable).with_name("taskology")
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    done = _run(str(script), "--help")
    assert done.returncode == 0 and done.stdout.startswith("Usage: taskology [OPTIONS] COMMAND")
    done = _run(str(script), "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"taskology, version {taskology.__version__}"


@pytest.mark.parametrize("module", ["taskology", "taskology.cli"])
def test_python_dash_m_reports_a_usage_error_on_one_line(module: str) -> None:
    done = _run(sys.executable, "-m", module, "trian")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "taskology: error: no such command 'trian'; did you mean 'train'? (see 'taskology --help')\n"


def test_real_process_traceback_only_with_debug(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    plain = _run(sys.executable, "-m", "taskology", "train", str(missing))
    assert plain.returncode == 2 and plain.stderr == f"taskology: error: {missing}: no such config file\n"
    debug = _run(sys.executable, "-m", "taskology", "--debug", "train", str(missing))
    assert debug.returncode == 2 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == f"taskology: error: {missing}: no such config file"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_run_on_its_own_first_keeps_its_short_help_option(command: str) -> None:
    from taskology.cli import cli

    alone = CliRunner().invoke(cli.commands[command], ["-h"], prog_name=f"taskology {command}")
    assert alone.exit_code == 0 and alone.stdout.startswith("Usage:"), alone.output
    assert invoke(command, "-h").stdout == invoke(command, "--help").stdout
