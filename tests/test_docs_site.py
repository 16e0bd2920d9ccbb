"""The documentation site builds offline in strict mode (`mkdocs build --strict`), with the API
reference generated from the docstrings, the README as home page and the gallery.

Skipped cleanly when the docs extra (mkdocs, mkdocstrings[python], mkdocs-material) is not installed.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MISSING = [m for m in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python", "material")
           if importlib.util.find_spec(m.split(".")[0]) is None
           or (m == "mkdocstrings_handlers.python" and importlib.util.find_spec(m) is None)]

pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"docs extra not installed (missing {MISSING}); "
                                                      "pip install 'linmultistep[docs]'")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    # one build at a time: with pytest-xdist the module's tests may run in two workers, and the docs
    # hook rebuilds one shared mirror of the sources (build/docs-api-src) at each build
    import fcntl

    (ROOT / "build").mkdir(exist_ok=True)
    lock = open(ROOT / "build" / ".docs-site.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           # offline: any attempt to reach the network fails instead of hanging
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    return out


def test_every_docs_page_is_built(site):
    for page in (ROOT / "docs").glob("*.md"):
        name = "" if page.stem == "index" else page.stem
        assert (site / name / "index.html").is_file(), page.name


def test_home_page_is_the_readme(site):
    html = (site / "index.html").read_text()
    readme = (ROOT / "README.md").read_text()
    assert readme.splitlines()[2] in html  # the README's opening sentence
    assert 'href="docs/' not in html  # README's docs/ links rewritten for the site


def test_api_reference_is_generated_from_docstrings(site):
    core = (site / "api" / "core" / "index.html").read_text()
    assert "linmultistep.fixedkernels" in core and "compose_shear" in core  # the bit-exact step's API
    ana = (site / "api" / "analysis" / "index.html").read_text()
    dif = (site / "api" / "diffusers" / "index.html").read_text()
    assert "linmultistep.diffusion" in core and "from_alphas_cumprod" in core
    assert "LinearMultistepMethod" in ana and "boundary locus" in ana  # lmm's docstrings
    assert "BELMScheduler" in dif


def test_gallery_images_exist(site):
    html = (site / "gallery" / "index.html").read_text()
    for img in ("roundtrip.png", "error_vs_steps.png", "stability_regions.png"):
        assert f"img/{img}" in html and (site / "img" / img).is_file()


def test_api_reference_has_a_page_for_every_public_module(site):
    pages = {name: (site / "api" / name / "index.html").read_text() for name in ("diffusers", "digits", "gradients", "cli")}
    kdiff = (site / "kdiffusion" / "index.html").read_text()
    for page, names in {
        "diffusers": ["linmultistep.backends.diffusers.generation.generate", "linmultistep.backends.diffusers.models",
                      "linmultistep.backends.diffusers.dataset", "UNetDenoiser"],
        "digits": ["linmultistep.backends.digits.pipeline.DigitsPipeline", "load_heldout"],
        "gradients": ["linmultistep.backends.gradients"],
        "cli": ["linmultistep.cli.Command"],
    }.items():
        for name in names:
            assert name in pages[page], (page, name)
    assert "linmultistep.backends.kdiffusion.sample_obelm" in kdiff


def test_docstrings_render_without_sphinx_roles_and_their_references_link(site):
    """`:class:`Grid`` written for Sphinx shows as text in mkdocstrings; the docs extension turns it into a link."""
    import re

    roles = re.compile(r":(class|func|meth|mod|data|attr|exc|obj):")
    for page in site.rglob("*.html"):
        assert not roles.search(page.read_text()), page
    core = (site / "api" / "core" / "index.html").read_text()
    assert 'href="#linmultistep.grid.Grid"' in core  # a cross-reference that resolved to its entry


def test_long_signatures_show_one_parameter_a_line(site):
    import html
    import re

    page = (site / "api" / "diffusers" / "index.html").read_text()
    start = page.index('id="linmultistep.backends.diffusers.pipeline.edit"')
    block = page[start:start + 20000]
    text = html.unescape(re.sub(r"<[^>]+>", "", block[block.index("<pre"):]))
    signature = text[:text.index(")")]
    assert "\n    settings: InversionSettings | None = None,\n" in signature, signature[:300]
