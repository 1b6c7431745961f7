"""``taskology sim --cluster``: the same shard files as a serial run, byte for byte, resume (identical shards skipped,
partial ones redone), a worker killed mid-sequence, and bad placements as one clear error with nothing written.

The cluster tests share one TLS-only LocalCluster on 127.0.0.1 (two single-threaded worker processes)
and reach it as a remote scheduler (``--cluster tls://...`` with the certificate files), the path every
non-local cluster takes; one slow test runs ``--cluster local`` through the command line."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from taskology.errors import ClusterError, SimError
from taskology.sim.command import checked_cluster, checked_output, parse_carla_hosts, sim_command, simulate_world
from taskology.sim.config import WorldConfig
from taskology.sim.distributed import EmbeddedSequence, FrameTally, simulate_on_cluster

#: the tiny world: 2 sequences x 2 frames at 32x96, 4 LiDAR beams.
TINY = dict(sequences=2, frames=2, seed=0, camera="32x96", lidar_beams=4, backend="embedded",
            carla_host="127.0.0.1:2000", preview=None)
NAMES = ["seed0-seq00000.h5", "seed0-seq00001.h5"]


def _shards(root: Path) -> dict[str, str]:
    """Shard name -> SHA-256 of the file's bytes (the same bytes: the same content and layout)."""
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob("*.h5"))}


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The tiny world simulated in this process: the reference shards."""
    out = tmp_path_factory.mktemp("serial") / "world"
    sim_command(out=out, **TINY)
    shards = _shards(out)
    assert sorted(shards) == NAMES
    return shards


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``sim_command`` options reaching a TLS-only LocalCluster with two worker processes on 127.0.0.1
    (a self-signed certificate made with the openssl CLI), shut down after the module."""
    from taskology.cluster.session import ClusterSpec, TLSFiles, open_cluster

    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=taskology-test", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    tls = TLSFiles(cert, cert, key)
    with open_cluster(ClusterSpec(address="local", n_workers=2, spare_workers=0, gpus=(), tls=tls)) as session:
        assert session.address.startswith("tls://127.0.0.1:")
        yield {"cluster": session.address, "tls_ca_file": cert, "tls_cert": cert, "tls_key": key}


# ------------------------------------------------------------------------------------ no cluster needed


@pytest.mark.parametrize("options, message", [
    (dict(cluster="yarn://x"), "--cluster: expected none, local, tcp://HOST:PORT or tls://HOST:PORT; found 'yarn://x'"),
    (dict(cluster="tcp://host"), "--cluster: expected none, local"),
    (dict(cluster=None, workers=2), "--workers needs --cluster"),
    (dict(cluster="tcp://127.0.0.1:8786", workers=2), "--workers starts local workers"),
    (dict(cluster="local", workers=0), "--workers must be >= 1, found 0"),
    (dict(cluster="tls://127.0.0.1:8786"), "needs --tls-ca-file, --tls-cert, --tls-key"),
    (dict(cluster="tcp://127.0.0.1:8786", tls_ca_file=Path("ca.pem")), "--tls-ca-file: TLS files go with --cluster tls://"),
    (dict(cluster="tls://127.0.0.1:8786", tls_ca_file=Path("/nonexistent/ca.pem"), tls_cert=Path("c.pem"),
          tls_key=Path("k.pem")), "--tls-ca-file: expected a PEM file, found nothing at /nonexistent/ca.pem"),
])
def test_bad_placement_is_one_sim_error(options: dict, message: str) -> None:
    with pytest.raises(SimError, match=message.replace("(", r"\(").replace(")", r"\)")):
        checked_cluster(**options)


def test_placements() -> None:
    assert checked_cluster(None) is None and checked_cluster("none") is None
    local = checked_cluster("local", workers=3)
    assert (local.address, local.n_workers, local.spare_workers, local.tls, local.gpus) == ("local", 3, 0, None, ())
    assert checked_cluster("TCP://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"


def test_bad_input_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for changes, message in [(dict(cluster="tcp://nohost"), "--cluster"),
                             (dict(cluster="local", preview=tmp_path / "p.png"), "--preview renders one frame"),
                             (dict(backend="carla", carla_host="a:2000,b:2000"), "2 servers given; without --cluster"),
                             (dict(backend="carla", cluster="local", carla_host="a:2000,a:2000"), "each server once"),
                             (dict(backend="carla", carla_host="a:2000,b"), "--carla-host: CARLA host must look like"),
                             (dict(out="s3://bucket/sim"), "--out s3://bucket/sim: s3:// URLs are not supported")]:
        with pytest.raises(SimError, match=message):
            sim_command(**{**TINY, "out": out, **changes})
    assert not out.exists() and not (tmp_path / "p.png").exists()


def test_outputs_and_hosts() -> None:
    assert checked_output("file:///data/sim") == Path("/data/sim") and checked_output("data/x") == Path("data/x")
    with pytest.raises(SimError, match="gs:// URLs are not supported; shards are written to a local or shared"):
        checked_output("gs://b/x")
    assert parse_carla_hosts("a:2000, b:2001") == ["a:2000", "b:2001"]
    with pytest.raises(SimError, match="each server once"):
        parse_carla_hosts("a:2000,a:2000")


@pytest.mark.parametrize("release", ["at the next dataset", "at file close"])
def test_shard_bytes_do_not_depend_on_when_dataset_handles_are_released(
        tmp_path: Path, serial: dict[str, str], monkeypatch: pytest.MonkeyPatch, release: str) -> None:
    """A Dask worker's shard once differed from the serial run's by where one chunk lay, exactly as when the
    handle of ``camera/K`` is released after ``camera/cam_from_ego`` has been made (something in the worker
    held it a moment longer): HDF5 places a chunk when its dataset closes. Here every dataset handle h5py
    returns is held on purpose, released late; the files must not change."""
    import h5py

    held: list[Any] = []
    create = h5py.Group.create_dataset

    def create_and_hold(self: Any, *args: Any, **kwargs: Any) -> Any:
        if release == "at the next dataset":
            held.clear()
        dset = create(self, *args, **kwargs)
        held.append(dset)
        return dset

    monkeypatch.setattr(h5py.Group, "create_dataset", create_and_hold)
    EmbeddedSequence(seed=0, frames=2, camera_hw=(32, 96), lidar_beams=4)(tmp_path, 0)
    assert held and _shards(tmp_path) == {NAMES[0]: serial[NAMES[0]]}


def test_frame_tally_counts_a_restarted_sequence_once() -> None:
    tally = FrameTally(frames=3)
    tally.report(0, 2)
    tally.report(1, 3)
    tally.report(0, 1)             # sequence 0 simulated again after its worker died
    assert tally.done() == 4
    tally.finish(0)
    tally.report(0, 1)             # a late report of the dead attempt does not count twice
    assert tally.done() == 3 + 3
    tally.report(2, 99)
    assert tally.done() == 3 + 3 + 3


def test_unreachable_scheduler_is_one_clear_error(tmp_path: Path) -> None:
    from taskology.cluster.session import ClusterSpec

    spec = ClusterSpec(address="tcp://127.0.0.1:9", connect_timeout_s=1.0)
    with pytest.raises(ClusterError, match=r"^cannot reach scheduler at tcp://127.0.0.1:9: ") as info:
        simulate_world(tmp_path / "out", sequences=1, frames=1, seed=0, camera_hw=(8, 8), lidar_beams=0,
                       world=WorldConfig(), cluster=spec)
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "out").glob("*.h5"))


def test_cli_bad_cluster_is_one_line_and_non_zero(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from taskology.cli import cli

    result = CliRunner().invoke(cli, ["sim", "--out", str(tmp_path / "o"), "--cluster", "ssh://x"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "'--cluster'" in lines[0] and "tcp://HOST:PORT" in lines[0]
    result = CliRunner().invoke(cli, ["sim", "--out", "s3://bucket/sim"])
    assert result.exit_code == 2 and result.output.strip() == (
        "taskology: error: --out s3://bucket/sim: s3:// URLs are not supported; shards are written to a local or "
        "shared filesystem path (HDF5 in place, then an atomic rename): mount the bucket (s3fs, gcsfuse) and give its "
        "path, or simulate locally and copy")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------- a cluster


def test_cluster_shards_are_the_serial_ones_and_a_rerun_redoes_only_partial_ones(
        tmp_path: Path, serial: dict[str, str], scheduler: dict[str, Any]) -> None:
    out = tmp_path / "world"
    world = sim_command(out=out, **TINY, **scheduler)
    assert world is not None and world.simulated == 2
    assert _shards(out) == serial
    # a stopped run: shard 1 never reached its name, its writer's temp file is left; shard 0 is complete
    kept = (out / NAMES[0]).stat()
    partial = out / f".{NAMES[1]}.tmp-4242-deadbeef"
    os.replace(out / NAMES[1], partial)
    with open(partial, "r+b") as f:
        f.truncate(1000)
    again = sim_command(out=out, **TINY, **scheduler)
    assert again is not None and again.simulated == 1 and again.digest == world.digest
    assert _shards(out) == serial and not partial.exists()
    assert (out / NAMES[0]).stat().st_ino == kept.st_ino and (out / NAMES[0]).stat().st_mtime_ns == kept.st_mtime_ns
    assert sorted(p.name for p in out.iterdir()) == [*NAMES, "world.json"]
    # everything there: nothing is submitted
    assert sim_command(out=out, **TINY, **scheduler).simulated == 0


def test_a_worker_that_dies_mid_sequence_does_not_leave_half_a_shard(tmp_path: Path, serial: dict[str, str],
                                                                     scheduler: dict[str, Any]) -> None:
    import cloudpickle
    from distributed import Client

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    out = tmp_path / "world"
    out.mkdir()
    job = DiesOnce(EmbeddedSequence(seed=0, frames=2, camera_hw=(32, 96), lidar_beams=4),
                   marker=str(tmp_path / "killed"))
    from taskology.cluster.session import TLSFiles, tls_security

    security = tls_security(TLSFiles(scheduler["tls_ca_file"], scheduler["tls_cert"], scheduler["tls_key"]))
    with Client(scheduler["cluster"], security=security, timeout=30) as client:
        frames_done: list[int] = []
        paths = simulate_on_cluster(client, job, out, [0, 1], on_progress=frames_done.append)
    assert frames_done and frames_done[-1] == 4  # the progress bar ends at 2 sequences x 2 frames
    seen = Path(job.marker).read_text().split()
    assert seen[0] == "pid" and int(seen[1]) != os.getpid()
    # at the kill: frame 1 of sequence 1 on disk only in a temp file, not under the shard's name
    assert NAMES[1] not in seen and any(name.startswith(f".{NAMES[1]}.tmp-") for name in seen)
    assert paths == [out / n for n in NAMES] and _shards(out) == serial
    # the dead writer's temp file is all that is left besides the shards; the command removes it
    left = [p.name for p in out.iterdir() if p.name not in NAMES]
    assert len(left) == 1 and left[0].startswith(f".{NAMES[1]}.tmp-")


@dataclass(frozen=True)
class DiesOnce:
    """A sequence job whose worker process is killed (SIGKILL) after frame 1 of sequence 1, once."""

    job: EmbeddedSequence
    marker: str

    @property
    def frames(self) -> int:
        return self.job.frames

    def shard_name(self, index: int) -> str:
        return self.job.shard_name(index)

    def __call__(self, out_dir: Path, index: int, *, progress: Callable[[int], None] | None = None,
                 server: str | None = None) -> Path:
        def progress_then_die(done: int) -> None:
            if progress is not None:
                progress(done)
            if index == 1 and done == 1 and not os.path.exists(self.marker):
                files = " ".join(sorted(p.name for p in Path(out_dir).iterdir()))
                Path(self.marker).write_text(f"pid {os.getpid()} {files}")
                os.kill(os.getpid(), signal.SIGKILL)

        return self.job(out_dir, index, progress=progress_then_die, server=server)


@pytest.fixture()
def threads_cluster():
    """A LocalCluster of 2 worker threads in this process (they see a faked ``carla`` module), closed after."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        yield client


#: (server, index, start, end) of each run of :class:`LogsServer`: the workers are threads of this process.
SERVER_LOG: list[tuple[str, int, float, float]] = []


@dataclass(frozen=True)
class LogsServer:
    """A sequence job that holds its server 0.1 s and logs when (no simulator)."""

    frames: int = 1

    def shard_name(self, index: int) -> str:
        return f"s{index}.h5"

    def __call__(self, out_dir: Path, index: int, *, progress: Callable[[int], None] | None = None,
                 server: str | None = None) -> Path:
        import time

        start = time.monotonic()
        time.sleep(0.1)
        (Path(out_dir) / self.shard_name(index)).write_text(str(server))
        SERVER_LOG.append((str(server), index, start, time.monotonic()))
        return Path(out_dir) / self.shard_name(index)


def test_each_server_records_one_sequence_at_a_time(tmp_path: Path, threads_cluster) -> None:
    SERVER_LOG.clear()
    paths = simulate_on_cluster(threads_cluster, LogsServer(), tmp_path, [0, 1, 2, 3, 4], servers=["a:1", "b:1"])
    assert paths == [tmp_path / f"s{i}.h5" for i in range(5)] and sorted(i for _, i, _, _ in SERVER_LOG) == [0, 1, 2, 3, 4]
    for server in ("a:1", "b:1"):
        runs = sorted((start, end) for s, _, start, end in SERVER_LOG if s == server)
        assert runs and all(prev_end <= start for (_, prev_end), (start, _) in zip(runs, runs[1:]))
    # two servers: two sequences ran at once at some point
    assert any(a[2] < b[3] and b[2] < a[3] for a in SERVER_LOG for b in SERVER_LOG if a[0] != b[0])


def test_carla_sequences_on_a_cluster_and_a_rerun_skips_them(tmp_path: Path, threads_cluster,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from fakecarla import FakeCarla  # tests/ is on the path (tests/conftest.py)

    from taskology.data.shard import Shard
    from taskology.sim.distributed import CarlaSequence

    fake = FakeCarla()
    monkeypatch.setitem(sys.modules, "carla", fake.module)
    job = CarlaSequence(seed=3, frames=2, camera_hw=(8, 12), lidar_beams=4, lidar_azimuth=16, frame_rate=20.0,
                        vehicles=1, walkers=1, warmup_ticks=1)
    paths = simulate_on_cluster(threads_cluster, job, tmp_path, [0, 1], servers=["127.0.0.1:2000"])
    assert [p.name for p in paths] == ["carla-seed3-seq00000.h5", "carla-seed3-seq00001.h5"]
    for index, path in enumerate(paths):
        with Shard.open(path) as shard:
            assert shard.num_frames == 2 and shard.generator["config"]["index"] == index
    ticks = fake.world.ticks
    assert simulate_on_cluster(threads_cluster, job, tmp_path, [0, 1], servers=["127.0.0.1:2000"]) == paths
    assert fake.world.ticks == ticks                       # complete, identical shards: nothing recorded again


@pytest.mark.slow
def test_cli_local_cluster_writes_the_serial_shards(tmp_path: Path, serial: dict[str, str]) -> None:
    from click.testing import CliRunner

    from taskology.cli import cli

    out = tmp_path / "world"
    args = ["sim", "--out", str(out), "--sequences", "2", "--frames", "2", "--camera", "32x96", "--lidar-beams", "4",
            "--cluster", "local", "--workers", "2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "local cluster" in result.output and "2 workers" in result.output and "frames/s" in result.output
    assert _shards(out) == serial
