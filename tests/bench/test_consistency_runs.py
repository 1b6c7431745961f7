"""``bench consistency --runs-dir/--rerun``: a stopped benchmark goes on where it stopped, a rerun replaces
only the runs it names, and a failed run never destroys a finished one. Training is replaced by a fake
that writes the same run record (the real one is exercised by the benchmark itself, not by tests)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from taskology.bench import consistency, run_benchmark
from taskology.errors import ConfigError

PRESET = consistency.PRESET
STEPS = 1200  # the preset's train.steps


def _tasks(fraction: float, arm: str, seed: int, version: int) -> dict[str, dict[str, float]]:
    base = 1.0 + fraction + (0.5 if arm == "collective" else 0.0) + seed / 10 + version
    return {task: {metric: base} for task, (metric, _) in consistency.HEADLINE.items()}


class FakeTraining:
    """Stands in for ``map_in_processes(_one_run, ...)``: writes each run's record like a finished run."""

    def __init__(self, version: int = 0, fail: tuple[float, str, int] | None = None) -> None:
        self.version, self.fail, self.trained = version, fail, []

    def __call__(self, fn: Any, jobs: dict, workers: int):  # type: ignore[no-untyped-def]
        for key, args in jobs.items():
            fraction, arm, seed, run_dir = args[2], args[3], args[4], Path(args[5])
            run_dir.mkdir(parents=True)
            if key == self.fail:
                (run_dir / "checkpoint.half").write_text("killed")
                raise RuntimeError(f"run {key} died")
            tasks = _tasks(fraction, arm, seed, self.version)
            (run_dir / "metrics.json").write_text(json.dumps(
                {"mode": arm, "seed": seed, "split": "test", "steps": STEPS, "tasks": tasks}))
            self.trained.append(key)
            yield key, (tasks, 1.0)


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    import taskology.bench.parallel as parallel
    import taskology.experiment as experiment

    monkeypatch.setattr(experiment, "ensure_world", lambda config: tmp_path / "data")
    monkeypatch.setattr(consistency, "_plot", lambda summary, path: None)

    def install(training: FakeTraining) -> FakeTraining:
        monkeypatch.setattr(parallel, "map_in_processes", training)
        return training
    return install


def _run(runs: Path, out: Path, rerun: tuple[str, ...] = ()) -> dict[str, Any]:
    return consistency.run(False, PRESET, out_dir=out, runs_dir=runs, rerun=rerun,
                           overrides=("train.seeds=[0,1,2]",)).figures


def test_a_stopped_benchmark_goes_on_where_it_stopped_and_a_rerun_replaces_only_what_it_names(fake, tmp_path) -> None:
    runs = tmp_path / "runs"
    jobs = [(fr, arm, seed) for fr in consistency.FRACTIONS for arm in consistency.ARMS for seed in (0, 1, 2)]
    last = (1.0, "collective", 2)
    first = fake(FakeTraining(fail=last))
    with pytest.raises(RuntimeError, match="died"):
        _run(runs, tmp_path)
    assert sorted(first.trained) == sorted(j for j in jobs if j != last)
    assert not (runs / consistency.run_name(*last)).exists() and (runs / f".{consistency.run_name(*last)}.partial").exists()

    second = fake(FakeTraining())
    figures = _run(runs, tmp_path)
    assert second.trained == [last]                                        # only the missing run trained
    assert not (runs / f".{consistency.run_name(*last)}.partial").exists()
    assert len(figures["reused_runs"]) == 17 and consistency.run_name(*last) not in figures["reused_runs"]
    assert figures["runs"]["0.02"]["alone"]["1"] == _tasks(0.02, "alone", 1, 0)   # read back from its record

    third = fake(FakeTraining(version=1, fail=(0.02, "collective", 1)))
    with pytest.raises(RuntimeError, match="died"):
        _run(runs, tmp_path, rerun=("0.02/collective",))
    record = json.loads((runs / "0.02-collective-1" / "metrics.json").read_text())
    assert record["tasks"] == _tasks(0.02, "collective", 1, 0)             # a failed rerun keeps the finished run

    fourth = fake(FakeTraining(version=1))
    figures = _run(runs, tmp_path, rerun=("0.02/collective",))
    assert sorted(fourth.trained) == [(0.02, "collective", s) for s in (0, 1, 2)]
    assert figures["runs"]["0.02"]["collective"]["1"] == _tasks(0.02, "collective", 1, 1)   # replaced
    assert figures["runs"]["0.1"]["collective"]["1"] == _tasks(0.1, "collective", 1, 0)     # kept
    assert figures["runs"]["0.02"]["alone"]["1"] == _tasks(0.02, "alone", 1, 0)
    assert sorted(p.name for p in runs.iterdir()) == sorted(consistency.run_name(*j) for j in jobs)  # no leftovers


def test_a_record_of_another_run_is_refused_with_its_path(fake, tmp_path) -> None:
    jobs = [(0.02, "alone", 0), (0.02, "collective", 0)]
    for text, message in (("{not json", "not a readable run record"),
                          (json.dumps({"mode": "collective", "seed": 0, "split": "test", "steps": STEPS, "tasks": {}}),
                           "a different run"),
                          (json.dumps({"mode": "alone", "seed": 0, "split": "val", "steps": STEPS, "tasks": {}}),
                           "a different run"),
                          (json.dumps({"mode": "alone", "seed": 0, "split": "test", "steps": STEPS,
                                       "tasks": {"depth": {"abs_rel": 0.3}}}), "no normals.mean_angle_deg")):
        path = tmp_path / "0.02-alone-0" / "metrics.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        with pytest.raises(ConfigError, match=message) as info:
            consistency.plan_runs(jobs, tmp_path, set(), STEPS)
        assert str(path) in str(info.value)
    path.write_text(json.dumps({"mode": "alone", "seed": 0, "split": "test", "steps": STEPS,
                                "tasks": _tasks(0.02, "alone", 0, 0)}))
    reused, todo = consistency.plan_runs(jobs, tmp_path, set(), STEPS)
    assert list(reused) == [(0.02, "alone", 0)] and todo == [(0.02, "collective", 0)]
    reused, todo = consistency.plan_runs(jobs, tmp_path, {(0.02, "alone")}, STEPS)
    assert reused == {} and todo == jobs


def test_runs_dir_and_rerun_are_checked_before_anything_runs(tmp_path) -> None:
    for kwargs, message in (({"rerun": ["0.02/collective"]}, "--rerun needs --runs-dir"),
                            ({"runs_dir": tmp_path / "r", "rerun": ["0.05/collective"]}, "--rerun '0.05/collective'"),
                            ({"runs_dir": tmp_path / "r", "rerun": ["0.02/together"]}, "ARM one of alone, collective")):
        with pytest.raises(ConfigError, match=message):
            run_benchmark("consistency", out_dir=tmp_path / "out", config=PRESET, **kwargs)
    with pytest.raises(ConfigError, match="takes no --runs-dir"):
        run_benchmark("staleness", out_dir=tmp_path / "out", runs_dir=tmp_path / "r")
    assert not (tmp_path / "out").exists() and not (tmp_path / "r").exists()


def test_the_command_names_runs_dir_and_rerun() -> None:
    from taskology.bench import provenance

    assert provenance("consistency", False, Path("consistency-gpu"), runs_dir=Path("runs/b"),
                      rerun=["0.02/collective"])["command"] == (
        "taskology bench consistency --config consistency-gpu --runs-dir runs/b --rerun 0.02/collective")


def test_runs_trained_on_another_world_are_not_reused(tmp_path: Path) -> None:
    jobs = [(0.02, "alone", 0)]
    path = tmp_path / "0.02-alone-0" / "metrics.json"
    path.parent.mkdir()
    record = {"mode": "alone", "seed": 0, "split": "test", "steps": STEPS, "tasks": _tasks(0.02, "alone", 0, 0)}
    for found in (None, "0123456789abcdef"):
        path.write_text(json.dumps({**record, "world": found}))
        with pytest.raises(ConfigError, match=f"trained on world {found}, not on the data root's world fedcba") as info:
            consistency.plan_runs(jobs, tmp_path, set(), STEPS, world="fedcba9876543210")
        assert "--rerun 0.02/alone" in str(info.value)
    path.write_text(json.dumps({**record, "world": "fedcba9876543210"}))
    assert list(consistency.plan_runs(jobs, tmp_path, set(), STEPS, world="fedcba9876543210")[0]) == jobs
