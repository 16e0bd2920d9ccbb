"""Doc slips (issue 22, item 10): what the pages say about paths, shapes, timings and example outputs
matches the repository and the code."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_digits_page_names_the_model_folder_where_it_is():
    text = (ROOT / "docs" / "digits.md").read_text()
    said = re.search(r"The folder `([^`]+)` of the repository", text)
    assert said, "digits.md should say where the model folder is"
    assert (ROOT / said.group(1) / "model_index.json").is_file(), said.group(1)


def test_diffusers_page_states_the_latent_shape_the_code_gives():
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from linmultistep.backends.diffusers import invert
    from linmultistep.backends.diffusers.testing import sample_images, tiny_sd_pipeline

    text = (ROOT / "docs" / "diffusers.md").read_text()
    shape = re.search(r"# State\(obelm, mode='stable', points=\[9, 10\], shape=\(([\d, ]+)\)", text)
    assert shape, "the State comment of diffusers.md's first example"
    torch.manual_seed(0)
    latent = invert(tiny_sd_pipeline(), sample_images(2), "a cat", num_steps=10, method="obelm", guidance_scale=3.0,
                    progress=False)
    assert tuple(latent.x.shape) == tuple(int(v) for v in shape.group(1).split(","))


def test_performance_page_quotes_the_measured_refusal_time():
    text = (ROOT / "docs" / "performance.md").read_text()
    assert "fraction of a second" not in text  # a claim, not a measurement
    rows = re.findall(r"^\s*refusal: .*?\s(\d+\.\d\d)\s+(\d+\.\d\d)$", text, flags=re.M)  # wall, CPU
    assert len(rows) >= 3, "the refusal rows of benchmarks/cli_timing.py, quoted verbatim"
    slowest = re.search(r"slowest refusal (\d+\.\d\d) s of CPU", text)
    assert slowest and float(slowest.group(1)) == max(float(cpu) for _, cpu in rows)  # the quote is consistent


def test_steer_digit_does_not_overwrite_a_tracked_file_by_default():
    tree = ast.parse((ROOT / "examples" / "steer_digit.py").read_text())
    defaults = [kw.value.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                and any(isinstance(a, ast.Constant) and a.value == "--out" for a in node.args)
                for kw in node.keywords if kw.arg == "default"]
    assert defaults, "steer_digit.py has an --out option"
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split())
    if not tracked:
        pytest.skip("not a git checkout")
    assert defaults[0] not in tracked, defaults[0]
