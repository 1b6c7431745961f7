#!/usr/bin/env bash
# Train on machines reachable by SSH, one GPU per task: `dask ssh` starts the scheduler on the first host
# of HOSTFILE and, on every host, worker processes pinned one GPU each by
# `python -m taskology.cluster.gpu_worker` (plain `dask worker --nworkers N` would leave every process
# on GPU 0); then the driver runs here: taskology train CONFIG --cluster tcp://FIRST_HOST:PORT.
#
#   bash examples/cluster/dask_ssh.sh HOSTFILE CONFIG [OVERRIDES...]
#   bash examples/cluster/dask_ssh.sh --dry-run HOSTFILE CONFIG [OVERRIDES...]   prints the commands only
#
# HOSTFILE: one host name or address per line (the first also runs the scheduler). Every host needs
# passwordless SSH (`pip install paramiko` here), the same Python environment at REMOTE_PYTHON and the
# shared file system holding RUN_DIR and data.root.
# Environment: GPUS_PER_HOST (4; each host runs that many workers + 1: the extra process holds the
# SimActor or is a spare, it sees a GPU but the SimActor does not use it), REMOTE_PYTHON (default: this
# python), RUN_DIR (default ./runs/ssh), SCHEDULER_PORT (8786), SSH_USER, SSH_KEY.
set -euo pipefail

dry_run=0
if [[ ${1:-} == --dry-run ]]; then dry_run=1; shift; fi
if [[ $# -lt 2 ]]; then
    echo "usage: bash examples/cluster/dask_ssh.sh [--dry-run] HOSTFILE CONFIG [OVERRIDES...]" >&2
    exit 2
fi
hostfile=$1; shift
if [[ ! -s $hostfile ]]; then
    echo "dask_ssh.sh: HOSTFILE: expected a file with one host per line, found nothing at '$hostfile'" >&2
    exit 2
fi
mapfile -t hosts < <(grep -v '^[[:space:]]*\(#\|$\)' "$hostfile" | awk '{print $1}')
if (( ${#hosts[@]} == 0 )); then
    echo "dask_ssh.sh: HOSTFILE '$hostfile' names no host" >&2
    exit 2
fi
gpus_per_host=${GPUS_PER_HOST:-4}
port=${SCHEDULER_PORT:-8786}
if ! [[ $gpus_per_host =~ ^[0-9]+$ && $port =~ ^[0-9]+$ ]]; then
    echo "dask_ssh.sh: GPUS_PER_HOST and SCHEDULER_PORT must be whole numbers; found '$gpus_per_host', '$port'" >&2
    exit 2
fi
workers_per_host=$(( gpus_per_host + 1 ))
python=${REMOTE_PYTHON:-$(command -v python)}
run_dir=${RUN_DIR:-$PWD/runs/ssh}
address=tcp://${hosts[0]}:$port
n_workers=$(( ${#hosts[@]} * workers_per_host ))
ssh_options=()
[[ -n ${SSH_USER:-} ]] && ssh_options+=(--ssh-username "$SSH_USER")
[[ -n ${SSH_KEY:-} ]] && ssh_options+=(--ssh-private-key "$SSH_KEY")

run() {  # run a command, or print it in a dry run
    if (( dry_run )); then printf '%q ' "$@"; echo; else "$@"; fi
}
cluster_pid=
cleanup() { [[ -n $cluster_pid ]] && kill "$cluster_pid" 2>/dev/null || true; }
trap cleanup EXIT

# scheduler on the first host; on each host GPUS_PER_HOST + 1 single-threaded workers, one GPU each
command=(dask ssh --hostfile "$hostfile" --scheduler "${hosts[0]}" --scheduler-port "$port"
         --nworkers "$workers_per_host" --nthreads 1 --memory-limit 0 --remote-python "$python"
         --remote-dask-worker taskology.cluster.gpu_worker "${ssh_options[@]}")
if (( dry_run )); then
    printf '%q ' "${command[@]}"; echo '&'
else
    "${command[@]}" &
    cluster_pid=$!
fi
# wait until every worker has joined: actors placed earlier would share GPUs
run python -c "from distributed import Client; c = Client('$address', timeout=300); c.wait_for_workers($n_workers, timeout=600)"
run taskology train "$@" --cluster "$address" --run-dir "$run_dir"
