"""Where a command-line run's time goes, on the shipped digits model, measured side by side.

Each row is the median wall time of fresh processes (what a user waits for): the interpreter, the
imports (torch, diffusers, the binding), loading the model, refusals of bad input (which must come
before torch and diffusers are imported), and whole commands. The last rows put one invocation over
8 images beside 8 invocations over one image each (the imports and the model load are paid once per
invocation), and --threads 1 beside torch's default threading.

    python benchmarks/cli_timing.py [--rounds 3] [--steps 50] [--refusals-only]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable


def wall(argv: list[str], rounds: int, expect: int = 0) -> "tuple[float, float]":
    """Median wall seconds and median CPU seconds (user + system) of ``rounds`` fresh processes. The CPU
    time is what the process needs on an idle core; on a shared machine the wall time is larger."""
    import resource

    times, cpus = [], []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        code = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        times.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if code != expect:
            raise SystemExit(f"{' '.join(argv)} exited with {code}, expected {expect}")
    return statistics.median(times), statistics.median(cpus)


def cli(*args: str) -> list[str]:
    return [PY, "-m", "linmultistep.cli", *args]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--refusals-only", action="store_true", help="only the refusal rows (seconds, not minutes)")
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        from PIL import Image

        from linmultistep.backends.digits import load_heldout

        x, y = load_heldout()
        images = []
        for k in range(8):
            p = d / f"d{k}.png"
            Image.fromarray(((x[k, 0] + 1) * 127.5).round().byte().numpy(), "L").save(p)
            images.append(str(p))
        label = str(int(y[0]))
        steps = str(a.steps)
        load = ("from linmultistep.backends.diffusers import load_pipeline; import torch; "
                "torch.set_num_threads(1); load_pipeline('digits', quiet=True)")
        refusals = [  # (row, argv): each must end with exit code 2
            ("refusal: --steps 0", cli("invert", "--model", "digits", images[0], "--prompt", label, "--steps", "0",
                                       "-o", str(d / "r.safetensors"))),
            ("refusal: missing image file", cli("invert", "--model", "digits", str(d / "missing.png"), "--prompt",
                                                label, "-o", str(d / "r.safetensors"))),
            ("refusal: unknown --model", cli("generate", "--model", str(d / "nowhere"), "--prompt", label,
                                             "-o", str(d / "r.png"))),
        ]
        rows = [
            ("python -c pass (interpreter)", [PY, "-c", "pass"]),
            ("linmultistep --help (no torch)", cli("--help")),
            ("import torch", [PY, "-c", "import torch"]),
            ("import diffusers", [PY, "-c", "import diffusers"]),
            ("import the binding (torch + diffusers)", [PY, "-c", "import linmultistep.backends.diffusers.pipeline"]),
            ("... + load the digits model", [PY, "-c", load]),
            (f"invert 1 image, {steps} steps", cli("invert", "--model", "digits", images[0], "--prompt", label,
                                                   "--steps", steps, "-o", str(d / "one.safetensors"), "--quiet",
                                                   "--overwrite", "--threads", "1")),
            ("invert 8 images in one invocation", cli("invert", "--model", "digits", *images, "--prompt", label,
                                                       "--steps", steps, "-o", str(d / "eight.safetensors"), "--quiet",
                                                       "--overwrite", "--threads", "1")),
            ("invert 1 image, torch's default threads", cli("invert", "--model", "digits", images[0], "--prompt", label,
                                                             "--steps", steps, "-o", str(d / "def.safetensors"),
                                                             "--quiet", "--overwrite")),
            (f"generate 4 digits, {steps} steps", cli("generate", "--model", "digits", "--prompt", label, "--count", "4",
                                                     "--steps", steps, "-o", str(d / "g.png"), "--quiet", "--overwrite",
                                                     "--threads", "1")),
        ]
        print(f"median seconds of {a.rounds} fresh processes; {steps} steps; --threads 1 unless said; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start\n")
        print(f"{'':48}{'wall':>9}{'CPU':>9}")
        measured, cpu = {}, {}
        for name, argv in refusals:
            measured[name], cpu[name] = wall(argv, a.rounds, expect=2)
            print(f"{name:48}{measured[name]:9.2f}{cpu[name]:9.2f}")
        if a.refusals_only:
            name = "python -c pass (interpreter)"
            measured[name], cpu[name] = wall([PY, "-c", "pass"], a.rounds)
            print(f"{name:48}{measured[name]:9.2f}{cpu[name]:9.2f}")
            slowest = max(cpu[name] for name, _ in refusals)
            print(f"\nslowest refusal {slowest:.2f} s of CPU = {slowest / cpu[name]:.1f}x the bare interpreter")
            return 0
        for name, argv in rows:
            measured[name], cpu[name] = wall(argv, a.rounds)
            print(f"{name:48}{measured[name]:9.2f}{cpu[name]:9.2f}")
        one, eight = measured[f"invert 1 image, {steps} steps"], measured["invert 8 images in one invocation"]
        base = measured["... + load the digits model"]
        slowest = max(cpu[name] for name, _ in refusals)
        print(f"\nslowest refusal {slowest:.2f} s of CPU = {slowest / cpu['python -c pass (interpreter)']:.1f}x the "
              f"bare interpreter, {slowest / cpu['... + load the digits model']:.0%} of importing torch + diffusers "
              "and loading the model")
        print(f"imports + model load share of a 1-image invert: {base / one:.0%}")
        print(f"8 images: one invocation {eight:.2f} s vs 8 invocations {8 * one:.2f} s "
              f"(8 x the 1-image row): {8 * one / eight:.1f}x less waiting")
        default = measured["invert 1 image, torch's default threads"]
        print(f"torch's default threads vs --threads 1 on this machine: {default / one:.2f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
