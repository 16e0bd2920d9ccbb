"""Images/s of dataset inversion, this checkout ("after") side by side with another one ("before", e.g.
the main branch's virtualenv), at several batch sizes, measured in one run, interleaved.

    python benchmarks/dataset_throughput.py [--images 64] [--steps 20] [--mode bits] [--batches 1 8 32]
        [--before /path/to/other/.venv/bin/python] [--repeats 2] [--world2]

The shipped digits model on the CPU. Each measurement is a fresh process running ``invert_dataset``
into an empty folder (shards of 64 images, one thread per network call, the default); its own timer
excludes start-up, model loading and a one-image warm-up run (the first run of a process also imports
numba and loads the compiled kernels). Before and after alternate, and the best of ``--repeats`` is
kept, so that load from other processes on a shared machine hits both alike. ``--world2`` adds world
size 2 (torchrun, two gloo ranks of one thread, shards of 16 images) for this checkout.

Since issue 23.2 the network is evaluated in a fixed chunk of rows per model (32 for digits), whatever
the batch size, so that latents do not depend on the batching: batches smaller than the chunk pay for
its padding, batch 32 should cost what it did.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

RUN = """
import json, sys, time, torch
torch.set_num_threads(1)
from linmultistep.backends.diffusers import dataset as D
from linmultistep.backends.digits import load_pipeline
pipe = load_pipeline()
pipe.set_progress_bar_config(disable=True)
src, out, steps, mode, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
# one image first, untimed: what a process pays once (importing numba and loading the compiled kernels of
# linmultistep[fast], about 0.5 s here, torch's first calls) is start-up, not throughput
D.invert_dataset(pipe, src.replace("list.txt", "warm.txt"), out + "-warm", num_steps=steps, mode=mode,
                 batch_size=batch, shard_size=64, progress=False)
cpu = time.process_time()
s = D.invert_dataset(pipe, src, out, num_steps=steps, mode=mode, batch_size=batch, shard_size=64, progress=False)
cpu = time.process_time() - cpu
print(json.dumps({"images_per_s": s["images_per_s"], "images_per_cpu_s": s["ok"] / cpu, "ok": s["ok"]}))
"""


def measure(python: str, src: Path, out: Path, steps: int, mode: str, batch: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([python, "-c", RUN, str(src), str(out), str(steps), mode, str(batch)], capture_output=True,
                          text=True, env=env, cwd=out.parent)
    if done.returncode != 0:
        raise SystemExit(f"{python} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--mode", default="bits")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--before", default=None, help="python of the checkout to compare with (e.g. main's .venv)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--world2", action="store_true", help="also world size 2 under torchrun (this checkout)")
    a = p.parse_args()

    import torch

    torch.set_num_threads(1)
    from linmultistep.backends.diffusers.images import to_pil
    from linmultistep.backends.digits import load_heldout

    tmp = Path(tempfile.mkdtemp(prefix="lms-bench-"))
    (tmp / "imgs").mkdir()
    x, y = load_heldout()
    lines = []
    for k in range(a.images):
        f = tmp / "imgs" / f"d{k:03d}.png"
        to_pil(x[k:k + 1])[0].save(f)
        lines.append(f"imgs/d{k:03d}.png\t{int(y[k])}")
    (tmp / "list.txt").write_text("\n".join(lines) + "\n")
    (tmp / "warm.txt").write_text(lines[0] + "\n")  # each process's untimed warm-up

    sides = {"after": sys.executable, **({"before": a.before} if a.before else {})}
    best: dict = {}
    n = 0
    for _ in range(a.repeats):
        for batch in a.batches:
            for name, python in sides.items():
                n += 1
                rates = measure(python, tmp / "list.txt", tmp / f"out{n}", a.steps, a.mode, batch)
                old = best.get((name, batch), {})
                best[name, batch] = {k: max(old.get(k, 0.0), v) for k, v in rates.items() if k != "ok"}
    print(f"{a.images} digits, {a.steps} steps, mode {a.mode}, CPU, world size 1, one thread per network call, "
          f"best of {a.repeats}; images per CPU second (robust to other load on the machine) and per wall second")
    if a.before:
        print("| batch | before img/CPU s | after img/CPU s | after / before | before img/s (wall) | after img/s (wall) |")
        print("|---|---|---|---|---|---|")
        for b in a.batches:
            bb, aa = best["before", b], best["after", b]
            print(f"| {b} | {bb['images_per_cpu_s']:.1f} | {aa['images_per_cpu_s']:.1f} | "
                  f"{aa['images_per_cpu_s'] / bb['images_per_cpu_s']:.2f}x | {bb['images_per_s']:.1f} | "
                  f"{aa['images_per_s']:.1f} |")
    else:
        print("| batch | img/CPU s | img/s (wall) |")
        print("|---|---|---|")
        for b in a.batches:
            print(f"| {b} | {best['after', b]['images_per_cpu_s']:.1f} | {best['after', b]['images_per_s']:.1f} |")
    if a.world2:
        print("\nworld size 2 (torchrun, gloo, shards of 16)\n| batch | images/s |\n|---|---|")
        for batch in a.batches:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
                   "-m", "linmultistep.cli", "invert-dataset", "--model", "digits", str(tmp / "list.txt"),
                   "--out", str(tmp / f"ws2-b{batch}"), "--steps", str(a.steps), "--mode", a.mode,
                   "--batch-size", str(batch), "--shard-size", "16", "--quiet"]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
            print(f"| {batch} | {float(re.search(r'([0-9.]+) images/s', out.stdout).group(1)):.1f} |")


if __name__ == "__main__":
    main()
