"""Images/s of dataset inversion: batch sizes 1, 8, 32 and world sizes 1 and 2 (CPU), as ratios to a
one-image-at-a-time loop (what the public reference code does), measured in one run.

    python benchmarks/dataset_throughput.py [--images 64] [--steps 20] [--mode bits]

The shipped digits model. The loop calls ``invert`` per image with 2 torch threads; invert-dataset
evaluates each network call with 1 thread (its default, for bit-identical results on any world size),
world size 2 runs under torchrun (gloo) with one rank per core. Times exclude process start-up and
model loading (rank 0's own timer).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--mode", default="bits")
    a = p.parse_args()

    import torch

    from linmultistep.backends.diffusers import dataset as D
    from linmultistep.backends.diffusers import invert
    from linmultistep.backends.diffusers.images import to_pil
    from linmultistep.backends.digits import load_heldout, load_pipeline

    tmp = Path(tempfile.mkdtemp(prefix="lms-bench-"))
    x, y = load_heldout()
    lines = []
    for k in range(a.images):
        f = tmp / f"d{k:03d}.png"
        to_pil(x[k:k + 1])[0].save(f)
        lines.append(f"{f}\t{int(y[k])}")
    (tmp / "list.txt").write_text("\n".join(lines) + "\n")
    pipe = load_pipeline()
    pipe.set_progress_bar_config(disable=True)

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    for k in range(a.images):
        invert(pipe, x[k:k + 1], [int(y[k])], num_steps=a.steps, mode=a.mode, progress=False)
    loop = a.images / (time.perf_counter() - t0)
    rows = [("one-image loop (2 threads)", 1, 1, loop)]
    for batch in (1, 8, 32):
        s = D.invert_dataset(pipe, tmp / "list.txt", tmp / f"ws1-b{batch}", num_steps=a.steps, mode=a.mode,
                             batch_size=batch, shard_size=64, progress=False)
        rows.append(("invert-dataset", 1, batch, s["images_per_s"]))
    for batch in (1, 8, 32):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
               "-m", "linmultistep.cli", "invert-dataset", "--model", "digits", str(tmp / "list.txt"),
               "--out", str(tmp / f"ws2-b{batch}"), "--steps", str(a.steps), "--mode", a.mode,
               "--batch-size", str(batch), "--shard-size", "16", "--quiet"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        rate = float(re.search(r"([0-9.]+) images/s", out.stdout).group(1))
        rows.append(("invert-dataset (torchrun, gloo)", 2, batch, rate))
    print(f"{a.images} digits, {a.steps} steps, mode {a.mode}, CPU (2 cores)")
    print("| run | world size | batch | images/s | vs one-image loop |")
    print("|---|---|---|---|---|")
    for name, ws, b, r in rows:
        print(f"| {name} | {ws} | {b} | {r:.1f} | {r / loop:.2f}x |")
    print(json.dumps({"loop": loop}), file=sys.stderr)


if __name__ == "__main__":
    main()
