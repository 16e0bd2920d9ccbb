"""Reconstructing a mode-'bits' latent on the machine that made it, and on "another machine".

Usage: python benchmarks/cross_capability.py [--steps 20] [--images 8] [--capabilities avx2 default]

The other machine is played by another ``ATEN_CPU_CAPABILITY`` on this one: torch's CPU kernels
differ by capability (AVX-512 / AVX2 / the portable default kernels), which changes the last bits of
the network's output as another CPU would. For every pair (inverted under A, reconstructed under B)
of the given capabilities this inverts held-out images of the shipped digits model in mode 'bits'
(one thread) in a subprocess under A, then reconstructs the saved latent in a subprocess under B:
- exact: ``reconstruct(pipe, latent)`` -- bit for bit, or refused (EnvironmentMismatchError) and
  after how many network calls (1 = the probe only: refused before the first step);
- approximate: ``reconstruct(pipe, latent, exact=False)`` -- its max |error| in pixels ([-1, 1]),
  the expected error the warning states, and whether the 8-bit images (PNG) still come back exactly.
Printed side by side as one table; docs/precision.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

INVERT = """
import json, sys, torch
torch.set_num_threads(1)
from linmultistep.backends.digits import load_heldout, load_pipeline
from linmultistep.backends.diffusers import invert, save_latent
pipe = load_pipeline()
x, y = load_heldout()
n, steps = int(sys.argv[2]), int(sys.argv[3])
latent = invert(pipe, x[:n], y[:n].tolist(), num_steps=steps, mode="bits", progress=False)
save_latent(latent, sys.argv[1])
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability()}))
"""

RECONSTRUCT = """
import json, re, sys, warnings, torch
torch.set_num_threads(1)
from linmultistep.backends.digits import load_heldout, load_pipeline
from linmultistep.backends.diffusers import load_latent, reconstruct
from linmultistep.backends.diffusers.environment import EnvironmentMismatchError
pipe = load_pipeline()
x, _ = load_heldout()
latent = load_latent(sys.argv[1])
x = x[: latent.x.shape[0]]
calls = [0]
pipe.unet.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
out = {"capability": torch.backends.cpu.get_cpu_capability()}
try:
    images = reconstruct(pipe, latent, progress=False).images
    out["exact"] = "bit for bit" if torch.equal(images, x) else "WRONG: max err %.1e" % float((images - x).abs().max())
except EnvironmentMismatchError:
    out["exact"] = "refused after %d network call(s)" % calls[0]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    approx = reconstruct(pipe, latent, progress=False, exact=False).images
stated = [re.search(r"below about ([0-9.e+-]+)", str(w.message)) for w in caught]
stated = [float(m.group(1)) for m in stated if m]
err = float((approx.double() - x.double()).abs().max())
to8 = lambda t: ((t.clamp(-1, 1) + 1) * 127.5).round()
out.update(error=err, stated=stated[0] if stated else None, png_exact=bool(torch.equal(to8(approx), to8(x))))
print(json.dumps(out))
"""


def run(code: str, capability: str, *args: str) -> dict:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"subprocess under ATEN_CPU_CAPABILITY={capability} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--capabilities", nargs="+", default=["avx2", "default"],
                    help="ATEN_CPU_CAPABILITY values to pair (this CPU must support them)")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        made = {}
        for a in args.capabilities:
            path = str(Path(tmp) / f"{a}.safetensors")
            made[a] = (path, run(INVERT, a, path, str(args.images), str(args.steps))["capability"])
        for a in args.capabilities:
            for b in args.capabilities:
                r = run(RECONSTRUCT, b, made[a][0])
                rows.append((made[a][1], r["capability"], r["exact"], r["error"], r["stated"], r["png_exact"]))
    print(f"digits model, {args.images} held-out images, O-BELM mode 'bits', {args.steps} steps, one thread")
    print("| inverted under | reconstructed under | exact reconstruction | approximate (exact=False): max error "
          "| stated expected error | 8-bit images exact |")
    print("|---|---|---|---|---|---|")
    for a, b, exact, err, stated, png in rows:
        st = "-" if stated is None else f"{stated:.1e}"
        print(f"| {a} | {b} | {exact} | {err:.1e} | {st} | {'yes' if png else 'no'} |")


if __name__ == "__main__":
    main()
