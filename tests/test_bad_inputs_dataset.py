"""The dataset commands under bad inputs and faults (issue 19): they never write into an input folder
nor replace a file without ``overwrite``; their bookkeeping (manifest, shards, resume) never lies;
errors name the file, line or variable; resources stay bounded (network calls of the fixed chunk,
oversized images refused from the header, impossible ranks refused up front, SIGTERM obeyed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from PIL import Image  # noqa: E402

from linmultistep.backends.diffusers import cli_dataset  # noqa: E402
from linmultistep.backends.diffusers import dataset as D  # noqa: E402
from linmultistep.backends.diffusers.adapters import eval_chunk_for  # noqa: E402
from linmultistep.backends.diffusers.dataset_files import DatasetError, distributed_env  # noqa: E402
from linmultistep.backends.diffusers.images import to_pil  # noqa: E402
from linmultistep.backends.diffusers.latents import load_latent  # noqa: E402
from linmultistep.backends.digits import load_heldout  # noqa: E402
from linmultistep.cli import main  # noqa: E402

STEPS = 3
DATA_LOSS, RESOURCES, UNCLEAR, BOOKKEEPING = "1 data loss", "2 resources", "9 unclear errors", "11 dataset bookkeeping"


@pytest.fixture(scope="module")
def pipe(digits_pipe):
    return digits_pipe


@pytest.fixture()
def data(tmp_path):
    """Six held-out digits as PNGs in imgs/, a list file with their labels, and two spare digits."""
    x, y = load_heldout()
    (tmp_path / "imgs").mkdir()
    lines = []
    for k in range(6):
        p = tmp_path / "imgs" / f"d{k}.png"
        to_pil(x[k * 7:k * 7 + 1])[0].save(p)
        lines.append(f"imgs/d{k}.png\t{int(y[k * 7])}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "spare").mkdir()
    for k in (100, 101):
        to_pil(x[k:k + 1])[0].save(tmp_path / "spare" / f"s{k}.png")
    (tmp_path / "spare_labels.json").write_text(json.dumps({"s100": int(y[100]), "s101": int(y[101])}))
    return tmp_path


def run(pipe, src, out, **kw):
    opts = dict(num_steps=STEPS, mode="bits", shard_size=3, progress=False)
    opts.update(kw)
    return D.invert_dataset(pipe, src, out, **opts)


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def same_latent_file(path, data: bytes) -> bool:
    """Tensors and metadata equal (safetensors orders header keys by a hash map: bytes may differ)."""
    from safetensors import safe_open
    from safetensors.torch import load as load_bytes

    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    other = load_bytes(data)
    import struct

    n = struct.unpack("<Q", data[:8])[0]
    other_meta = json.loads(data[8:8 + n])["__metadata__"]
    return meta == other_meta and sorted(tensors) == sorted(other) and all(torch.equal(tensors[k], other[k]) for k in other)


def same_pixels(a, b) -> bool:
    import numpy as np

    return np.array_equal(np.asarray(Image.open(a).convert("L")), np.asarray(Image.open(b).convert("L")))


# --- 1 data loss ---------------------------------------------------------------------------------
@pytest.mark.bad_input(DATA_LOSS)
def test_invert_into_an_input_folder_is_refused_and_its_manifest_kept(pipe, data):
    (data / "imgs" / "manifest.jsonl").write_text('{"path": "mine", "note": "the user\'s own file"}\n')
    before = snapshot(data)
    with pytest.raises(DatasetError, match="inside the input folder"):
        run(pipe, data / "imgs", data / "imgs", prompt="3")
    with pytest.raises(DatasetError, match="inside the input folder"):
        run(pipe, data / "imgs", data / "imgs" / "lat", prompt="3")
    with pytest.raises(DatasetError, match="holds the input"):  # a list file's images live in the output folder
        run(pipe, data / "list.txt", data)
    os.symlink(data / "imgs", data / "link")
    with pytest.raises(DatasetError, match="inside the input folder"):
        run(pipe, data / "imgs", data / "link", prompt="3")
    os.unlink(data / "link")
    assert snapshot(data) == before


@pytest.mark.bad_input(DATA_LOSS)
def test_invert_into_a_folder_of_foreign_files_needs_overwrite(pipe, data):
    out = data / "lat"
    out.mkdir()
    (out / "manifest.jsonl").write_text("someone else's manifest\n")
    with pytest.raises(DatasetError, match="not from an invert-dataset run.*--overwrite"):
        run(pipe, data / "list.txt", out)
    assert (out / "manifest.jsonl").read_text() == "someone else's manifest\n"
    assert sorted(os.listdir(out)) == ["manifest.jsonl"]


@pytest.mark.bad_input(DATA_LOSS)
def test_reconstruct_never_replaces_earlier_outputs_without_overwrite(pipe, data):
    lat, back = data / "lat", data / "back"
    run(pipe, data / "list.txt", lat)
    first = D.reconstruct_dataset(pipe, lat, back, verify=True, progress=False)
    assert first["images"] == 6 and first["differing"] == []
    target = sorted(back.iterdir())[2]
    target.write_bytes(b"the user's edited result")
    with pytest.raises(DatasetError, match=r"already holds 6 of the files to write \(000000_d0.png.*--overwrite"):
        D.reconstruct_dataset(pipe, lat, back, progress=False)
    assert target.read_bytes() == b"the user's edited result"
    again = D.reconstruct_dataset(pipe, lat, back, overwrite=True, progress=False)
    assert again["images"] == 6 and same_pixels(target, data / "imgs" / target.name.split("_", 1)[1])


@pytest.mark.bad_input(DATA_LOSS)
def test_reconstruct_output_names_never_meet_the_inputs(pipe, data):
    lat = data / "lat"
    run(pipe, data / "list.txt", lat)
    # originals named like the outputs would be: 000000_d0.png in the images' own folder
    (data / "imgs" / "000000_d0.png").write_bytes((data / "imgs" / "d1.png").read_bytes())
    before = snapshot(data)
    with pytest.raises(DatasetError, match="holds the input"):
        D.reconstruct_dataset(pipe, lat, data / "imgs", progress=False)
    with pytest.raises(DatasetError, match="inside the input folder"):
        D.reconstruct_dataset(pipe, lat, lat / "back", progress=False)
    assert snapshot(data) == before


@pytest.mark.bad_input("10 cli")
def test_cli_refuses_writing_into_inputs_before_loading_the_model(data, monkeypatch, capsys):
    def refuse(*_a, **_k):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr(cli_dataset, "load_pipeline", refuse)
    assert main(["invert-dataset", "--model", "digits", str(data / "imgs"), "--out", str(data / "imgs"),
                 "--prompt", "3", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "inside the input folder" in err[0]


# --- 11 dataset bookkeeping ----------------------------------------------------------------------
@pytest.mark.bad_input(BOOKKEEPING)
def test_resume_after_a_deleted_or_replaced_latent_re_inverts_that_shard(pipe, data):
    out = data / "lat"
    run(pipe, data / "list.txt", out)
    clean = {k: (out / f"shard-0000{k}.safetensors").read_bytes() for k in (0, 1)}
    (out / "shard-00001.safetensors").unlink()
    s = run(pipe, data / "list.txt", out)
    assert any("shard 1 is re-inverted: its latent file shard-00001.safetensors is missing" in n for n in s["notes"])
    assert s["ok"] == 6 and s["shards_done"] == 1 and s["shards_skipped"] == 1
    assert same_latent_file(out / "shard-00001.safetensors", clean[1])  # the same run, the same bits
    (out / "shard-00001.safetensors").write_bytes(clean[0])  # another shard's latent under its name
    s = run(pipe, data / "list.txt", out)
    assert any("shard 1 is re-inverted" in n and "SHA-256" in n for n in s["notes"]) and s["ok"] == 6
    for r in D.read_manifest(out):  # every listed image has its own latent
        assert D.load_image_latent(out, r).x.shape[0] == 1


@pytest.mark.bad_input(BOOKKEEPING)
def test_rerun_inverts_added_and_changed_images_and_lists_each_once(pipe, data):
    out = data / "lat"
    run(pipe, data / "list.txt", out)
    labels = json.loads((data / "spare_labels.json").read_text())
    (data / "spare" / "s100.png").rename(data / "imgs" / "a_new.png")  # sorts first: every old shard would shift
    lines = [f"imgs/a_new.png\t{labels['s100']}"] + (data / "list.txt").read_text().splitlines()
    (data / "list.txt").write_text("\n".join(lines) + "\n")
    s = run(pipe, data / "list.txt", out)
    assert s["images"] == 7 and s["ok"] == 7 and s["shards_skipped"] == 2 and s["shards_done"] == 1
    assert any("1 image(s) without a finished latent" in n for n in s["notes"])
    paths = [r["path"] for r in D.read_manifest(out)]
    assert len(paths) == 7 and len(set(paths)) == 7
    # an image whose file now holds another digit is inverted again and listed once
    (data / "spare" / "s101.png").replace(data / "imgs" / "d2.png")
    lines = [ln if not ln.startswith("imgs/d2.png") else f"imgs/d2.png\t{labels['s101']}" for ln in lines]
    (data / "list.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="other options"):  # a changed label for the same options is fine ...
        run(pipe, data / "list.txt", out, num_steps=STEPS + 1)  # ... other options are not
    s = run(pipe, data / "list.txt", out)
    assert any("1 image(s) whose file changed" in n for n in s["notes"]) and s["ok"] == 7
    records = D.read_manifest(out)
    assert len({r["path"] for r in records}) == len(records) == 7
    res = D.reconstruct_dataset(pipe, out, data / "back", verify=True, progress=False)
    assert res["images"] == 7 and res["differing"] == [] and res["max_abs_error"] == 0.0


@pytest.mark.bad_input(BOOKKEEPING)
def test_swapped_positions_in_the_manifest_are_detected(pipe, data):
    out = data / "lat"
    run(pipe, data / "list.txt", out)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    rows[0]["position"], rows[1]["position"] = rows[1]["position"], rows[0]["position"]
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetError, match=r"manifest.jsonl line 1: .*d0.png is listed at position 1 .*latent of .*d1.png"):
        D.reconstruct_dataset(pipe, out, data / "back", verify=True, progress=False)
    with pytest.raises(DatasetError, match="edited or mixed up"):
        D.load_image_latent(out, str(data / "imgs" / "d1.png"))
    assert not (data / "back").exists()


@pytest.mark.bad_input(BOOKKEEPING)
def test_manifest_paths_are_relative_to_its_folder_and_old_ones_still_read(pipe, data, monkeypatch):
    monkeypatch.chdir(data)
    run(pipe, "imgs", "runs/lat", prompt="3", shard_size=64)
    stored = [json.loads(line)["path"] for line in (data / "runs" / "lat" / "manifest.jsonl").read_text().splitlines()]
    assert stored[0] == "../../imgs/d0.png"  # relative to the manifest's folder, not to this run's directory
    (data / "runs").rename(data / "moved")  # a latents folder moved next to ... and read from elsewhere
    (data / "elsewhere").mkdir()
    monkeypatch.chdir(data / "elsewhere")
    assert [os.path.realpath(r["path"]) for r in D.read_manifest("../moved/lat")] == [
        os.path.realpath(data / "moved" / "lat" / s) for s in stored]
    back = D.reconstruct_dataset(pipe, "../moved/lat", "back", verify=True, progress=False)
    assert back["images"] == 6 and back["differing"] == []
    # an older manifest (no "format"): paths as its run gave them, from that run's directory
    legacy = [{k: v for k, v in r.items() if k not in ("format", "line")} for r in D.read_manifest("../moved/lat")]
    (data / "old").mkdir()
    (data / "old" / "manifest.jsonl").write_text("".join(json.dumps({**r, "path": "imgs/d0.png"}) + "\n" for r in legacy[:1]))
    assert D.read_manifest(data / "old")[0]["path"] == "imgs/d0.png"


@pytest.mark.bad_input(BOOKKEEPING)
def test_a_refused_or_failed_start_leaves_nothing_behind(pipe, data, monkeypatch):
    out = data / "lat"
    with pytest.raises(DatasetError, match=r"prompt \(the default .*class label, got ''"):
        run(pipe, data / "imgs", out)  # the digits model needs a class label; '' is refused up front
    assert not out.exists()
    (data / "bad.txt").write_text("imgs/d0.png\t3\nimgs/d1.png\tseven\n")
    with pytest.raises(DatasetError, match=r"bad.txt line 2: .*'seven'"):
        run(pipe, data / "bad.txt", out)
    assert not out.exists()

    def broken(*_a, **_k):
        raise ValueError("the network failed")

    monkeypatch.setattr(D, "invert", broken)
    with pytest.raises(ValueError, match="the network failed"):
        run(pipe, data / "imgs", out, prompt="3")
    assert not out.exists()
    monkeypatch.undo()
    assert run(pipe, data / "imgs", out, prompt="4")["ok"] == 6  # the corrected command is not refused


@pytest.mark.bad_input(BOOKKEEPING)
def test_a_rank_outside_the_world_is_refused_not_silently_idle(data, monkeypatch, capsys):
    with pytest.raises(DatasetError, match=r"RANK=1 is outside 0 \.\. 0 for WORLD_SIZE=1"):
        distributed_env({"RANK": "1", "WORLD_SIZE": "1"})
    monkeypatch.setattr(cli_dataset, "load_pipeline", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert main(["invert-dataset", "--model", "digits", str(data / "list.txt"), "--out", str(data / "lat"), "--quiet"]) == 2
    assert "RANK=1" in capsys.readouterr().err
    assert not (data / "lat").exists()


# --- 9 unclear errors ----------------------------------------------------------------------------
@pytest.mark.bad_input(UNCLEAR)
def test_a_corrupt_manifest_line_names_the_file_and_line(pipe, data):
    out = data / "lat"
    run(pipe, data / "list.txt", out)
    lines = (out / "manifest.jsonl").read_text().splitlines()
    lines[2] = lines[2][:40]
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"manifest.jsonl line 3 is not valid JSON"):
        D.read_manifest(out)
    with pytest.raises(DatasetError, match=r"manifest.jsonl line 3"):
        D.reconstruct_dataset(pipe, out, data / "back", progress=False)
    (out / "manifest.jsonl").write_text('[1, 2]\n')
    with pytest.raises(DatasetError, match=r"line 1 is not a manifest record"):
        D.read_manifest(out)


@pytest.mark.bad_input(UNCLEAR)
@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "abc"}, r"WORLD_SIZE='abc' is not an integer"),
    ({"WORLD_SIZE": "0"}, r"WORLD_SIZE=0 must be at least 1"),
    ({"WORLD_SIZE": "2", "RANK": "-1"}, r"RANK=-1 is outside 0 \.\. 1"),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "x"}, r"LOCAL_RANK='x' is not an integer"),
])
def test_distributed_environment_errors_name_the_variable(env, message):
    with pytest.raises(DatasetError, match=message):
        distributed_env(env)


# --- 2 resources ---------------------------------------------------------------------------------
@pytest.mark.bad_input(RESOURCES)
def test_a_huge_batch_size_never_pads_past_the_fixed_chunk(pipe, data, monkeypatch):
    rows = []
    forward = pipe.unet.forward

    def counting(x, *a, **k):
        rows.append(int(x.shape[0]))
        return forward(x, *a, **k)

    monkeypatch.setattr(pipe.unet, "forward", counting)
    run(pipe, data / "list.txt", data / "lat", batch_size=100000, shard_size=64)
    monkeypatch.undo()
    size = pipe.unet.config.sample_size
    assert rows and set(rows) == {eval_chunk_for(pipe.unet)}
    assert eval_chunk_for(pipe.unet) * size * size <= 32 * 32 * 32 and eval_chunk_for(pipe.unet) <= 32


@pytest.mark.bad_input(RESOURCES)
def test_an_oversized_image_is_refused_from_its_header(pipe, data, monkeypatch):
    Image.new("L", (4000, 4000), 0).save(data / "imgs" / "huge.png")  # a few KB on disk, 16 Mpx decoded
    assert (data / "imgs" / "huge.png").stat().st_size < 100_000
    decoded = []
    real = D.load_image
    monkeypatch.setattr(D, "load_image", lambda p, *a, **k: decoded.append(str(p)) or real(p, *a, **k))
    s = run(pipe, data / "imgs", data / "lat", prompt="3", shard_size=64)
    assert s["ok"] == 6 and s["failed"] == 1
    bad = [r for r in D.read_manifest(data / "lat") if r["status"] != "ok"]
    assert len(bad) == 1 and "4000x4000" in bad[0]["error"] and "downscale" in bad[0]["error"]
    assert not [p for p in decoded if p.endswith("huge.png")]


@pytest.mark.bad_input(RESOURCES)
def test_rank_beyond_the_world_is_refused_and_a_blocked_rendezvous_obeys_sigterm(tmp_path):
    with pytest.raises(DatasetError, match=r"RANK=3 is outside 0 \.\. 1 for WORLD_SIZE=2"):
        distributed_env({"RANK": "3", "WORLD_SIZE": "2"})
    # rank 0 of 2 whose partner never comes waits in torch's C++ rendezvous; with the CLI's SIGTERM
    # handler installed (a Python handler cannot run there), SIGTERM must still end it
    script = textwrap.dedent("""
        import signal, sys
        signal.signal(signal.SIGTERM, lambda s, f: sys.exit(143))
        from linmultistep.backends.diffusers.dataset import setup_distributed
        print("waiting", flush=True)
        setup_distributed("cpu")
    """)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "waiting"
        time.sleep(3)  # inside init_process_group by now
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code in (-signal.SIGTERM, 143)
