"""``taskology bench carla-live``: its step times and ratios, the fake server it starts, and that both runs are
configured alike (no cluster, no training)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from taskology.bench import BENCHMARKS
from taskology.bench import carla_live as cl
from taskology.errors import ConfigError


def test_step_times_median_and_ratio_known_answers() -> None:
    walls = {0: 100.0, 1: 100.25, 2: 100.5, 3: 101.5, 4: 101.75, 6: 102.0}
    seconds = cl.step_seconds(walls)
    assert seconds == {1: 0.25, 2: 0.25, 3: 1.0, 4: 0.25}      # step 6 follows no logged step 5: no time
    assert cl.median_after_warmup(seconds, warmup=2) == pytest.approx(0.625)   # steps 3 and 4
    with pytest.raises(ValueError, match="no step after the 4 warm-up steps"):
        cl.median_after_warmup(seconds, warmup=4)
    assert cl.round_ratios([1.2, 0.9, 1.0], [1.0, 1.0, 0.8]) == pytest.approx([0.9, 1.2, 1.25])
    with pytest.raises(ValueError, match="as many carla as embedded rounds"):
        cl.round_ratios([1.0], [1.0, 1.0])


def test_the_step_log_is_read_back_from_tensorboard(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    for step, (wall, seconds) in {1: (50.0, 0.2), 2: (50.5, 0.3), 3: (51.25, 0.4)}.items():
        writer.add_scalar("time/step_s", seconds, step, walltime=wall)
        writer.add_scalar("loss/total", 1.0, step, walltime=wall)
    writer.close()
    walls, optimizer = cl.read_step_log(tmp_path)
    assert walls == {1: 50.0, 2: 50.5, 3: 51.25} and optimizer == pytest.approx({1: 0.2, 2: 0.3, 3: 0.4})
    assert cl.step_seconds(walls) == {2: 0.5, 3: 0.75}


@pytest.mark.parametrize("before", ["absent", "a module"])
def test_the_fake_server_starts_answers_and_goes(monkeypatch: pytest.MonkeyPatch, before: str) -> None:
    sentinel = object()
    if before == "absent":
        monkeypatch.delitem(sys.modules, "carla", raising=False)
    else:
        monkeypatch.setitem(sys.modules, "carla", sentinel)
    from taskology.sim.carla_backend import connect

    with cl.FakeCarlaServer() as fake:
        assert cl.fake_carla_running()
        client = connect("127.0.0.1:2000", timeout_s=1.0)     # the backend's own connect: version checked
        assert client.get_world() is fake.world and fake.connect_attempts == 1
    assert ("carla" not in sys.modules) if before == "absent" else (sys.modules["carla"] is sentinel)
    plugin = cl.FakeCarlaPlugin()                              # what each worker runs, from start to end
    plugin.setup(worker=None)
    assert cl.fake_carla_running()
    plugin.teardown(worker=None)
    assert ("carla" not in sys.modules) if before == "absent" else (sys.modules["carla"] is sentinel)


def test_a_missing_fake_server_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^bench carla-live: the fake CARLA server is expected at .*nothing there$"):
        cl.load_fake_carla(tmp_path / "fakecarla.py")


def test_both_runs_are_configured_alike_but_for_the_backend() -> None:
    from taskology.config import load_config

    embedded, carla = (cl.bench_overrides(cl.FULL, b, Path("/w"), "tcp://127.0.0.1:1") for b in cl.BACKENDS)
    assert [o for o in embedded if o not in carla] == ["sim.backend=embedded"]
    assert [o for o in carla if o not in embedded] == ["sim.backend=carla"]
    config = load_config(None, carla)
    assert config.enabled_tasks() == list(cl.TASKS) and config.enabled_relations() == {"depth_normals": 1.0}
    assert config.runs_a_sim_actor() and config.sim.lidar_beams == 0 and config.train.log_every == 1
    assert "carla-live" in BENCHMARKS and BENCHMARKS["carla-live"] == cl.__name__


def test_the_result_takes_the_median_of_the_rounds() -> None:
    def figures(backend: str, median: float) -> cl.RunFigures:
        carla = backend == "carla"
        return cl.RunFigures(backend=backend, median_step_s=median, mean_step_s=2 * median, median_optimizer_step_s=0.1,
                             steps_measured=200, wall_s=30.0, sim_frames=64, sim_shards=8, sim_frames_per_s=40.0,
                             sim_phase="waiting", sim_cpu_s=1.6 if carla else 3.2,
                             prefill_cpu_ms_per_frame=5.0 if carla else 100.0, pools_applied={"depth": 5, "normals": 5},
                             restarts={"sim": 0})

    runs = {"embedded": [figures("embedded", m) for m in (0.100, 0.100, 0.100)],
            "carla": [figures("carla", m) for m in (0.104, 0.120, 0.090)]}
    result = cl._result(cl.Sizes(steps=10, warmup=2, rounds=3), runs, 1.0, 2.0)
    assert result.figures["ratio_median_step"] == pytest.approx(1.04)
    assert result.figures["ratios_median_step"] == pytest.approx([0.9, 1.04, 1.2])
    assert result.targets["carla_over_embedded_median_step"] == {"value": pytest.approx(1.04), "target": "<= 1.05",
                                                                 "met": True}
    assert result.figures["runs"]["carla"][0]["sim_cpu_ms_per_frame"] == pytest.approx(25.0)   # 1.6 s, 64 frames
    assert "| embedded, round 1 | 100.0 | 200.0 | 100.0 | 64 | 5, 5 | 3.20 (50) | 100 |" in result.table
    assert "| **carla / embedded** (median of rounds) | **1.040** | 1.040 | 1.000 | | | 0.500 | 0.050 |" in result.table
