"""Data-parallel scaling of compact-recognizer pretraining: the project's own launcher (torchrun + DDP in
`ocr_assets.models.compact.train`) on 1, 2, 4, 8 GPUs of one host, the same data and number of samples each time.

    python benchmarks/ddp_scaling.py --train A.parquet,B.parquet --val C.parquet [--gpus 1,2,4,8] [--epochs 30]

Per-GPU batch stays fixed (so the global batch grows with the GPU count, as users run it); samples/s is the mean
over epochs after the first (warm-up, compilation, worker start); efficiency = rate(N) / (N x rate(1)).
CER is on --val after the same number of samples. Prints a Markdown table; --json OUT saves it.
NVLink multicast stays off (NCCL_NVLS_ENABLE=0), as the lent machines require.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def gpu_count() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def run(n: int, args, out: Path) -> dict:
    cpus = os.cpu_count() or 2
    cmd = ["torchrun", "--standalone", f"--nproc_per_node={n}", "-m", "ocr_assets.models.compact.train",
           "--train", args.train, "--val", args.val, "--out", str(out), "--epochs", str(args.epochs),
           "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--num-workers", str(max(1, cpus // n - 2)),
           "--checkpoint-every", "0", "--log-every", "0", "--seed", "1"]
    if args.augment:
        cmd.append("--augment")
    env = {**os.environ, "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{n} GPU run failed ({done.returncode})")
    history = json.loads((out / "history.json").read_text())
    steady = history[1:] or history
    rate = sum(h["samples_per_s"] for h in steady) / len(steady)
    last = history[-1]
    return {"gpus": n, "samples_per_s": round(rate, 1), "wall_s": round(wall, 1), "epochs": len(history),
            "val_cer": round(last.get("val_cer", float("nan")), 4), "val_cer_norm": round(last.get("val_cer_norm", float("nan")), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True)
    ap.add_argument("--val", required=True)
    ap.add_argument("--gpus", default="1,2,4,8")
    ap.add_argument("--epochs", type=int, default=30)  # from scratch, 30 epochs of the four books reach CER ~0.16
    ap.add_argument("--batch-size", type=int, default=128, help="per GPU")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--augment", action="store_true")
    ap.add_argument("--work", type=Path, default=Path("var/ddp_scaling"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    available = gpu_count()
    counts = [n for n in (int(g) for g in args.gpus.split(",")) if n <= available]
    if not counts:
        raise SystemExit(f"no GPU count in {args.gpus} fits the {available} GPUs here")
    rows = [run(n, args, args.work / f"gpus_{n}") for n in counts]
    base = next((r for r in rows if r["gpus"] == 1), None)
    for r in rows:
        r["efficiency"] = round(r["samples_per_s"] / (r["gpus"] * base["samples_per_s"]), 3) if base else None
    import torch

    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "?"
    print(f"{card}, {available} GPUs on the host, {os.cpu_count()} CPUs; per-GPU batch {args.batch_size}, {args.epochs} epochs")
    print("| GPUs | samples/s | scaling efficiency | wall s | val CER | val CER_norm |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['gpus']} | {r['samples_per_s']} | {r['efficiency']} | {r['wall_s']} | {r['val_cer']} | {r['val_cer_norm']} |")
    skipped = [int(g) for g in args.gpus.split(",") if int(g) > available]
    if skipped:
        print(f"not run (only {available} GPU(s) here): {skipped}")
    if args.json:
        args.json.write_text(json.dumps({"card": card, "gpus_available": available, "rows": rows, "not_run": skipped}, indent=1))


if __name__ == "__main__":
    main()
