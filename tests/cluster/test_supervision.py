"""Pure supervision decisions (restart policy, placement by GPU) and the live table, without a cluster:
the supervisor's own placement code runs against a simulated local cluster."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from taskology.cluster.live import staleness_summary, status_rows
from taskology.cluster.supervision import RestartPolicy, choose_worker, gpu_loads, gpu_task_cap
from taskology.engine.supervisor import ActorSlot, Supervisor


def test_restart_now_then_backoff_then_give_up() -> None:
    policy = RestartPolicy(max_restarts=3, backoff_s=2.0, max_backoff_s=3.0)
    assert policy.decide(0, last_failure=100.0, now=100.0).action == "restart"  # first loss: at once
    wait = policy.decide(1, last_failure=100.0, now=100.5)
    assert wait.action == "wait" and wait.wait_s == pytest.approx(1.5)  # 2 s backoff, 0.5 s elapsed
    assert policy.decide(1, last_failure=100.0, now=102.0).action == "restart"
    assert policy.decide(2, last_failure=100.0, now=102.9).action == "wait"  # 4 s capped to 3 s
    assert policy.decide(2, last_failure=100.0, now=103.0).action == "restart"
    give_up = policy.decide(3, last_failure=100.0, now=500.0)
    assert give_up.action == "give_up" and "lost 4 times (max_restarts=3)" in give_up.reason
    assert RestartPolicy(max_restarts=0).decide(0, None, 0.0).action == "give_up"


def test_choose_worker_prefers_free_then_least_occupied_then_address() -> None:
    live = {"tcp://h:3": {}, "tcp://h:1": {}, "tcp://h:2": {}}
    assert choose_worker(live, {}) == "tcp://h:1"
    assert choose_worker(live, {"tcp://h:1": 1}) == "tcp://h:2"
    assert choose_worker(live, {"tcp://h:1": 2, "tcp://h:2": 1, "tcp://h:3": 1}) == "tcp://h:2"
    assert choose_worker(live, {"tcp://h:1": 1, "tcp://h:2": 1, "tcp://h:3": 1}, allow_shared=False) is None
    assert choose_worker({}, {}) is None


def test_choose_worker_gpu() -> None:
    live = {"tcp://cpu:1": {}, "tcp://gpu:1": {"GPU": 1}, "tcp://gpu:2": {"GPU": 1}}
    assert choose_worker(live, {"tcp://gpu:1": 1}, needs_gpu=True) == "tcp://gpu:2"
    assert choose_worker(live, {"tcp://gpu:1": 1, "tcp://gpu:2": 1}, needs_gpu=True, allow_shared=False) is None
    assert choose_worker({"tcp://cpu:1": {}}, {}, needs_gpu=True) == "tcp://cpu:1"  # no GPU anywhere: any


def test_live_rows_show_progress_staleness_and_restarts() -> None:
    actors = {
        "depth": {"kind": "task", "restarts": 2, "status": {
            "state": "training", "step": 120, "steps_per_s": 3.456, "scalars": {"loss/total": 0.12345},
            "staleness": {"staleness/normals/mean_steps": 40.0, "staleness/normals/mean_s": 2.5},
            "exchange_bytes_per_s": 2048.0}},
        "sim": {"kind": "sim", "restarts": 0, "status": {"phase": "generating", "shards_available": 3,
                                                         "frames_per_s": 4.0}},
        "normals": {"kind": "task", "restarts": 0, "status": {}},
    }
    rows = status_rows(actors, target_steps=500)
    assert rows[0] == ["depth", "training", "120/500", "3.46", "0.1235", "40 st / 2.5 s", "2.0 kB/s", "2"]
    assert rows[1][:3] == ["sim", "generating", "3 shards"]
    assert rows[2][:3] == ["normals", "starting", "0/500"] and rows[2][5] == ""
    assert staleness_summary({}) == (None, None)


# ---- one GPU per task: the supervisor's placement on a simulated local cluster ----------------------
class _SimulatedCluster:
    """The workers of a local cluster as the supervisor sees them: worker i sees GPU i mod G and
    advertises GPU=1; addresses (ports) come in random order, unrelated to i, as on a real machine."""

    def __init__(self, n_workers: int, n_gpus: int, rng: random.Random) -> None:
        self.rng = rng
        self.gpu_of: dict[str, str] = {}
        self.ports = rng.sample(range(30000, 40000), 200)
        for i in range(n_workers):
            self.add(f"127.0.0.1/{i % n_gpus}" if n_gpus else None)

    def add(self, gpu: str | None) -> str:
        address = f"tcp://127.0.0.1:{self.ports.pop()}"
        self.gpu_of[address] = gpu or ""
        return address

    def live(self) -> dict[str, dict[str, float]]:
        return {a: ({"GPU": 1.0} if g else {}) for a, g in self.gpu_of.items()}

    def worker_gpus(self, addresses: list[str]) -> dict[str, str]:  # ClusterSession.worker_gpus
        return {a: self.gpu_of[a] for a in addresses if self.gpu_of.get(a)}


def _supervisor(cluster: _SimulatedCluster, n_tasks: int, with_sim: bool) -> Supervisor:
    slots = [ActorSlot(name=f"t{i}", cls=None, kwargs={}, needs_gpu=True) for i in range(n_tasks)]
    if with_sim:
        slots.append(ActorSlot(name="sim", cls=None, kwargs={}, kind="sim", needs_gpu=False))
    return Supervisor(cluster, slots, target_steps=1, policy=RestartPolicy(), run_dir=Path("unused"))  # type: ignore[arg-type]


def _place(sup: Supervisor, cluster: _SimulatedCluster, slot: ActorSlot) -> None:
    """What Supervisor.create does, without a cluster: a free worker (on a GPU below its share) first;
    if there is none, the nanny brings the dead worker back (same GPU, new address) and that is used."""
    live = {a: r for a, r in cluster.live().items() if a not in sup.dead_workers}
    worker = sup._choose(slot, live, allow_shared=False)
    assert worker is not None, f"{slot.name}: no worker without sharing; live {live}, placed {_loads(sup)}"
    slot.worker, slot.handle = worker, object()


def _loads(sup: Supervisor) -> dict[str, int]:
    return gpu_loads([(s.worker, s.needs_gpu) for s in sup.slots.values() if s.handle is not None],
                     sup.worker_gpu)


def _check_bound(sup: Supervisor, n_tasks: int, n_gpus: int, where: str) -> None:
    cap = -(-n_tasks // n_gpus)
    loads = _loads(sup)
    assert sum(loads.values()) == n_tasks and max(loads.values()) <= cap, f"{where}: {loads} (cap {cap})"
    workers = [s.worker for s in sup.slots.values()]
    assert len(set(workers)) == len(workers), f"{where}: two actors share a worker"


@pytest.mark.parametrize("n_gpus", [1, 2, 3, 4])
def test_no_gpu_holds_more_than_its_share_of_tasks_at_start_and_after_every_restart(n_gpus: int) -> None:
    for n_tasks in range(1, 9):
        for with_sim in (False, True):
            for spare in (0, 1, 2):
                rng = random.Random(1000 * n_tasks + 10 * spare + with_sim)
                cluster = _SimulatedCluster(n_tasks + with_sim + spare, n_gpus, rng)
                sup = _supervisor(cluster, n_tasks, with_sim)
                case = f"T={n_tasks} G={n_gpus} sim={with_sim} spare={spare}"
                for slot in sup.tasks.values():
                    _place(sup, cluster, slot)
                if with_sim:  # then the SimActor (run_distributed lists it last): it takes no GPU's share and
                    # sits on the most loaded GPU that has a free worker, keeping free workers of the others
                    loads, taken = _loads(sup), {s.worker for s in sup.tasks.values()}
                    most = max(loads.get(cluster.gpu_of[a], 0) for a in cluster.gpu_of if a not in taken)
                    _place(sup, cluster, sup.slots["sim"])
                    assert loads.get(cluster.gpu_of[str(sup.slots["sim"].worker)], 0) == most, case
                _check_bound(sup, n_tasks, n_gpus, case)
                for _round in range(2):  # every actor's worker dies in turn (random order), twice
                    for slot in rng.sample(list(sup.slots.values()), len(sup.slots)):
                        dead = str(slot.worker)
                        sup.dead_workers.add(dead)
                        slot.handle = None
                        live = {a: r for a, r in cluster.live().items() if a not in sup.dead_workers}
                        if sup._choose(slot, live, allow_shared=False) is None:
                            cluster.add(cluster.gpu_of[dead])  # the nanny restarts the process
                        _place(sup, cluster, slot)
                        _check_bound(sup, n_tasks, n_gpus, f"{case}, {slot.name} restarted")


def test_a_task_restarted_goes_to_the_least_loaded_gpu_not_the_spare_on_a_full_one() -> None:
    # 4 tasks on 4 GPUs, one spare worker that sees GPU 0: GPU 2's task is lost
    gpus = {"tcp://h:1": "h/0", "tcp://h:2": "h/1", "tcp://h:3": "h/2", "tcp://h:4": "h/3", "tcp://h:5": "h/0"}
    live = {a: {"GPU": 1.0} for a in gpus}
    occupied = {"tcp://h:1": 1, "tcp://h:2": 1, "tcp://h:4": 1}
    load = {"h/0": 1, "h/1": 1, "h/3": 1}
    del live["tcp://h:3"]  # its worker is dead (the nanny is restarting it)
    assert choose_worker(live, occupied, True, allow_shared=False, worker_gpus=gpus, gpu_load=load,
                         gpu_cap=gpu_task_cap(4, 4)) is None  # wait: the spare would put two tasks on GPU 0
    live["tcp://h:6"], gpus["tcp://h:6"] = {"GPU": 1.0}, "h/2"  # restarted, same GPU
    assert choose_worker(live, occupied, True, allow_shared=False, worker_gpus=gpus, gpu_load=load,
                         gpu_cap=1) == "tcp://h:6"
    # the wait is over and GPU 2 never came back: share GPU 0 rather than fail
    del live["tcp://h:6"]
    assert choose_worker(live, occupied, True, allow_shared=True, worker_gpus=gpus, gpu_load=load,
                         gpu_cap=1) == "tcp://h:5"


def test_the_sim_prefers_a_worker_without_gpu_then_the_most_loaded_gpu() -> None:
    gpus = {"tcp://g:1": "g/0", "tcp://g:2": "g/0", "tcp://g:3": "g/1", "tcp://g:4": "g/1"}
    live: dict[str, dict[str, float]] = {a: {"GPU": 1.0} for a in gpus}
    occupied = {"tcp://g:1": 1, "tcp://g:2": 1, "tcp://g:3": 1}
    load = {"g/0": 2, "g/1": 1}
    assert choose_worker(live, occupied, False, worker_gpus=gpus, gpu_load=load) == "tcp://g:4"
    live["tcp://cpu:9"] = {}
    assert choose_worker(live, occupied, False, worker_gpus=gpus, gpu_load=load) == "tcp://cpu:9"
    # and a GPU actor never takes the CPU-only worker while a GPU worker is free
    assert choose_worker(live, occupied, True, worker_gpus=gpus, gpu_load=load) == "tcp://g:4"


def test_gpu_task_cap_and_loads() -> None:
    assert [gpu_task_cap(t, 3) for t in range(1, 8)] == [1, 1, 1, 2, 2, 2, 3]
    assert gpu_task_cap(0, 2) == 1 and gpu_task_cap(5, 0) is None
    assert gpu_loads([("a", True), ("b", True), ("a", True), ("c", True), (None, True)],
                     {"a": "x/0", "b": "x/1"}) == {"x/0": 2, "x/1": 1}
