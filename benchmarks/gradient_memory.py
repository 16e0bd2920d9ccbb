"""Peak memory and time of one gradient through a sampler: reversible vs checkpoint vs autograd.

    python benchmarks/gradient_memory.py [--steps 10 50 200] [--batch 8] [--threads 1]

The shipped digits model, O-BELM in mode 'stable', classifier-free guidance w = 2, loss = sum of
x_0^2; gradient with respect to the noise, the guidance scale and the class embeddings. Each
configuration runs in a fresh process. CPU: memory is the peak resident set size above the process's
own baseline (model loaded, one sampling run done); CUDA (--device cuda): torch.cuda.max_memory_allocated
above the baseline. Time: one forward+backward, and its ratio to a plain no-grad sampling run of the
same length measured in the same process (the faster of two runs of each), and the time and memory
of each strategy over checkpointing's at the same N. Times are the process's CPU time
(time.process_time, with --threads 1 the one thread's work), so that other jobs on a shared
machine do not add theirs.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

STRATEGIES = ("autograd", "checkpoint", "reversible")


def _one(strategy: str, steps: int, batch: int, threads: int, device: str, repeats: int = 2) -> dict:
    import torch

    from linmultistep.backends import gradients as G
    from linmultistep.backends.diffusers.adapters import Conditioning, UNetEps, encode_classes
    from linmultistep.backends.diffusers.generation import generate
    from linmultistep.backends.diffusers.grid import grid_from_config
    from linmultistep.backends.digits import load_pipeline

    torch.set_num_threads(threads)
    pipe = load_pipeline(device=device)
    labels = [k % 10 for k in range(batch)]
    grid = grid_from_config(pipe.scheduler, steps)
    noise = torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(0)).to(device)
    t_sample = math.inf
    for _ in range(repeats):  # the faster of two runs: the machine may be shared
        t0 = time.process_time()
        generate(pipe, labels, num_steps=steps, guidance_scale=2.0, noise=noise, mode="stable", progress=False)
        t_sample = min(t_sample, time.process_time() - t0)

    def peak() -> float:
        if device == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = peak()
    c = encode_classes(pipe.unet, labels, batch, 2.0)
    w = torch.tensor(2.0, device=device, requires_grad=True)
    net = UNetEps(pipe.unet, grid, "epsilon", Conditioning(c.cond, c.uncond, w))
    emb = pipe.unet.class_embedding.weight
    x = noise.clone().requires_grad_()
    t_grad = math.inf
    for _ in range(repeats):
        t0 = time.process_time()
        out = G.sample(net.eps_with_grad, x, grid, "obelm", gradient=strategy, mode="stable", params=[w, emb])
        (out ** 2).sum().backward()
        t_grad = min(t_grad, time.process_time() - t0)
        del out
    return {"strategy": strategy, "steps": steps, "peak_mib": peak() - base, "grad_s": t_grad,
            "sample_s": t_sample, "ratio": t_grad / t_sample}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, nargs="+", default=[10, 50, 200])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)  # torch's intra-op threads, set in each process
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=2, help="runs of each measurement; the fastest is kept")
    p.add_argument("--one", nargs=2, metavar=("STRATEGY", "STEPS"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(_one(a.one[0], int(a.one[1]), a.batch, a.threads, a.device, a.repeats)))
        return
    rows = []
    for steps in a.steps:
        for strategy in STRATEGIES:
            cmd = [sys.executable, __file__, "--one", strategy, str(steps), "--batch", str(a.batch),
                   "--threads", str(a.threads), "--device", a.device, "--repeats", str(a.repeats)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            rows.append(json.loads(out))
            print(f"  measured {strategy} N={steps}", file=sys.stderr, flush=True)
    print(f"digits model, batch {a.batch}, O-BELM stable, guidance 2, {a.threads} thread(s), {a.device}, "
          f"fastest of {a.repeats} run(s), CPU time")
    print("| N | strategy | peak memory above baseline (MiB) | time per gradient (s) | / sampling run "
          "| time / checkpoint's | memory / checkpoint's |")
    print("|---|---|---|---|---|---|---|")
    ref = {r["steps"]: r for r in rows if r["strategy"] == "checkpoint"}
    for r in rows:
        c = ref[r["steps"]]
        print(f"| {r['steps']} | {r['strategy']} | {r['peak_mib']:.1f} | {r['grad_s']:.2f} | {r['ratio']:.2f}x "
              f"| {r['grad_s'] / c['grad_s']:.2f}x | {r['peak_mib'] / c['peak_mib']:.2f}x |")
    worst = max(r["grad_s"] / ref[r["steps"]]["grad_s"] for r in rows if r["strategy"] == "reversible")
    print(f"\nreversible / checkpoint time per gradient: at most {worst:.2f}x over N = "
          + ", ".join(str(s) for s in a.steps))


if __name__ == "__main__":
    main()
