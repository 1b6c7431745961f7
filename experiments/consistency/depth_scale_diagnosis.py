"""Depth scale diagnostic on a kept run dir: raw AbsRel, per-image median-scaled AbsRel, and the mean
|log| of the per-image scale ratio median(pred)/median(gt) on the validation split."""
import sys, json
from pathlib import Path
import torch
from taskology.bench.consistency import _arm_config
from taskology.engine.collective import checkpoint_steps, checkpoint_path
from taskology.engine.runner import TaskRunner, load_checkpoint
from taskology.engine.peers import InProcessPeerView
from taskology.engine.batches import collate

def main(run_dir, root, extra):
    cfg = _arm_config(list(extra), False, Path(root), 0.1, "collective", Path("configs/consistency-cpu.yaml"))
    steps = checkpoint_steps(run_dir, "depth")
    r = TaskRunner(task_name="depth", config=cfg, data_root=Path(cfg.data.root), run_dir=Path(run_dir),
                   peer_view=InProcessPeerView(), seed=0, device="cpu", collective=False)
    r.load_state_dict(load_checkpoint(checkpoint_path(run_dir, "depth", steps[-1])))
    ds = r.data.evaluation("val")
    raw, scaled, logs = [], [], []
    with torch.no_grad():
        for lo in range(0, len(ds), 8):
            b = collate([ds[i] for i in range(lo, min(lo + 8, len(ds)))])
            p = r.predict(b)["depth"].double(); g = b["depth"].double()
            for i in range(p.shape[0]):
                v = g[i] > 0
                pi, gi = p[i][v], g[i][v]
                s = gi.median() / pi.median()
                raw.append(((pi - gi).abs() / gi).mean().item())
                scaled.append(((pi * s - gi).abs() / gi).mean().item())
                logs.append(abs(torch.log(s)).item())
    n = len(raw)
    print(json.dumps({"run": str(run_dir), "abs_rel": sum(raw)/n, "abs_rel_median_scaled": sum(scaled)/n,
                      "mean_abs_log_scale": sum(logs)/n, "frames": n}))

if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
