"""Start the Dask cluster of a taskology run on Kubernetes (dask-kubernetes operator), one GPU per task.

One single-threaded worker pod per task with one GPU (advertised as the ``GPU`` resource), one spare
GPU pod, one CPU-only pod for the SimActor (it renders on the CPU), all mounting the persistent volume
claim that holds the run directories and the data root. Needs the operator in the cluster and
``pip install dask-kubernetes`` here (see docs/cluster.md).

    python examples/cluster/kubernetes.py --tasks 6 --image registry.example/taskology:0.1 --claim taskology-runs
    python examples/cluster/kubernetes.py --tasks 6 --image ... --claim ... --dry-run   # print the YAML only

Then run the driver in a pod of the same namespace:
``taskology train CONFIG --cluster tcp://taskology-scheduler:8786 --run-dir /shared/runs/NAME``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from taskology.cluster.recipes import kubernetes_cluster_spec
from taskology.errors import ClusterError


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubernetes.py", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, required=True, help="enabled tasks of the experiment (one GPU pod each)")
    parser.add_argument("--image", required=True, help="container image with taskology installed")
    parser.add_argument("--claim", required=True, help="persistent volume claim with run dirs and data root")
    parser.add_argument("--mount-path", default="/shared")
    parser.add_argument("--name", default="taskology", help="DaskCluster name (scheduler service NAME-scheduler)")
    parser.add_argument("--cpus-per-task", type=int, default=4)
    parser.add_argument("--memory", default="16Gi")
    parser.add_argument("--spare", type=int, default=1, help="spare GPU pods (a lost actor restarts there at once)")
    parser.add_argument("--dry-run", action="store_true", help="print the DaskCluster resource (YAML), create nothing")
    return parser.parse_args(argv)


def cpu_worker_group(args: argparse.Namespace) -> dict[str, Any]:
    """Arguments of ``KubeCluster.add_worker_group`` for the SimActor's CPU-only worker pod."""
    return {"name": "cpu", "n_workers": 1, "worker_command": "dask worker --nthreads 1",
            "resources": {"limits": {"cpu": str(args.cpus_per_task), "memory": args.memory}}}


def main(argv: Sequence[str] | None = None, make_spec: Any = None) -> int:
    args = parse_args(argv)
    try:
        spec = kubernetes_cluster_spec(n_actors=args.tasks, spare=args.spare, image=args.image,
                                       claim_name=args.claim, mount_path=args.mount_path, name=args.name,
                                       cpus_per_actor=args.cpus_per_task, memory=args.memory, make_spec=make_spec)
    except ClusterError as exc:
        print(f"kubernetes.py: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        import yaml

        print(f"# then: KubeCluster.add_worker_group(**{cpu_worker_group(args)})  (the SimActor's pod)")
        print(yaml.safe_dump(spec, sort_keys=False), end="")
        return 0
    from dask_kubernetes.operator import KubeCluster

    cluster = KubeCluster(custom_cluster_spec=spec, shutdown_on_close=False)
    cluster.add_worker_group(**cpu_worker_group(args))
    print(f"scheduler: {cluster.scheduler_address}")
    print(f"driver (in a pod of this namespace): taskology train CONFIG --cluster tcp://{args.name}-scheduler:8786 "
          f"--run-dir {args.mount_path}/runs/NAME")
    print(f"remove it with: kubectl delete daskcluster {args.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
