"""Bad images get a clear error naming the file or argument; accepted inputs are read as documented."""

from __future__ import annotations

import struct
import zlib

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from PIL import Image  # noqa: E402

from linmultistep.backends.diffusers import invert, reconstruct  # noqa: E402
from linmultistep.backends.diffusers.images import ImageSizeError, load_image, read_images, to_tensor  # noqa: E402
from linmultistep.backends.diffusers.testing import sample_images  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def png_header_only(path, width: int, height: int) -> None:
    """A valid PNG signature and IHDR claiming width x height, with one tiny IDAT: a few hundred
    bytes that would decode to width * height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


# --- 2. resource exhaustion ------------------------------------------------------------------------
@pytest.mark.bad_input("2 resources")
@pytest.mark.parametrize("size", [(9000, 9000), (50000, 50000), (2**20, 2**20)])
def test_huge_images_are_refused_from_the_header_naming_the_file(tmp_path, size):
    path = tmp_path / f"bomb{size[0]}.png"
    png_header_only(path, *size)
    assert path.stat().st_size < 200
    with pytest.raises(ValueError, match=f"bomb{size[0]}.png"):  # ImageSizeError or PIL's bomb error, as ValueError
        load_image(path)
    with pytest.raises(ValueError, match=f"bomb{size[0]}.png"):
        to_tensor([str(path)])


@pytest.mark.bad_input("2 resources")
def test_pixel_limit_applies_to_arrays_and_tensors():
    with pytest.raises(ImageSizeError, match="more than the limit of 100"):
        read_images(torch.zeros(1, 3, 16, 16), max_pixels=100)
    with pytest.raises(ImageSizeError, match="more than the limit"):
        read_images(Image.new("RGB", (16, 16)), max_pixels=100)


# --- 8. silent coercions: what is accepted is read as documented -------------------------------------
@pytest.mark.bad_input("8 coercions")
def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (8, 16), (10, 20, 30))
    im.paste((200, 0, 0), (0, 0, 8, 2))  # a red band at the top of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    upright = load_image(tmp_path / "rot.jpg")
    assert upright.size == (16, 8)  # width and height swapped, as a viewer shows it
    px = np.asarray(upright)
    assert px[:, -2:, 0].mean() > 150 and px[:, :2, 0].mean() < 100  # the band is now on the right


@pytest.mark.bad_input("8 coercions")
def test_numpy_and_uint8_images_match_pil_and_float_inputs():
    x = sample_images(2, size=8)
    u8 = ((x + 1) * 127.5).round().to(torch.uint8)
    pil = [Image.fromarray(a.permute(1, 2, 0).numpy(), "RGB") for a in u8]
    ref = read_images(pil).x
    hwc = u8.permute(0, 2, 3, 1).numpy()
    for given in (hwc, list(hwc), hwc.astype(np.float32) / 255.0, hwc.astype(np.float64) / 255.0):
        got = read_images(given)
        assert got.kind == "pil" and torch.allclose(got.x, ref, atol=1e-6)
    got = read_images(u8)  # uint8 tensors: 0..255, channels first
    assert got.kind == "pt" and torch.allclose(got.x, ref, atol=1e-6)
    grey = read_images(hwc[0, :, :, 0])  # (H, W) grey
    assert grey.x.shape == (1, 3, 8, 8) and torch.equal(grey.x[:, 0], grey.x[:, 2])
    assert read_images(np.zeros((8, 8, 4), np.uint8)).x.shape == (1, 3, 8, 8)  # RGBA: composited
    assert hwc.dtype == np.uint8 and u8.dtype == torch.uint8  # inputs unchanged


BAD_ARRAYS = [
    (np.full((8, 8, 3), 1.5, np.float32), r"\[0, 1\]"),
    (np.full((8, 8, 3), -0.2), r"\[0, 1\]"),
    (np.full((8, 8, 3), np.nan), "NaN"),
    (np.zeros((8, 8, 3), np.int16), "uint8 .* or float"),
    (np.zeros((8, 8, 3), bool), "uint8 .* or float"),
    (np.zeros((8, 8, 2), np.uint8), "C in 1, 3, 4"),
    (np.zeros((3, 8, 8), np.uint8), "C in 1, 3, 4"),  # channels first: refused, not misread
    (np.zeros((0, 8, 8, 3), np.uint8), "batch size 0"),
    (np.zeros((1, 1, 8, 8, 3), np.uint8), "shape"),
    (np.zeros(8, np.uint8), "shape"),
]


@pytest.mark.bad_input("8 coercions")
@pytest.mark.parametrize("arr,match", BAD_ARRAYS, ids=[f"array{k}" for k in range(len(BAD_ARRAYS))])
def test_bad_numpy_images_are_refused(arr, match):
    with pytest.raises(ValueError, match=match):
        read_images(arr)


BAD_TENSORS = [
    (torch.zeros(1, 3, 8, 8, dtype=torch.int64), "float in \\[-1, 1\\] or uint8"),
    (torch.zeros(1, 4, 8, 8), "shape \\(B, 3, H, W\\)"),
    (torch.zeros(8, 8), "shape"),
    (torch.zeros(0, 3, 8, 8), "batch size 0"),
    (torch.zeros(1, 3, 0, 8), "empty"),
    (torch.full((1, 3, 8, 8), float("nan")), "NaN"),
    (torch.full((1, 3, 8, 8), 2.0), "\\[-1, 1\\]"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.complex64), "float in"),
]


@pytest.mark.bad_input("9 unclear errors")
@pytest.mark.parametrize("t,match", BAD_TENSORS, ids=[f"tensor{k}" for k in range(len(BAD_TENSORS))])
def test_bad_tensor_images_are_refused(t, match):
    with pytest.raises(ValueError, match=match):
        read_images(t)


@pytest.mark.bad_input("9 unclear errors")
@pytest.mark.parametrize("bad,exc,match", [
    (Image.new("RGB", (0, 0)), ValueError, "empty"),
    (Image.new("RGB", (0, 8)), ValueError, "empty"),
    ([], ValueError, "empty"),
    ([Image.new("RGB", (8, 8)), 3], TypeError, r"images\[1\] must be a PIL image"),
    ({"a": 1}, TypeError, "must be a PIL image"),
    ([np.zeros((2, 8, 8, 3), np.uint8)], ValueError, "batch of 2 images inside a list"),
])
def test_empty_and_foreign_image_inputs_are_named(bad, exc, match):
    with pytest.raises(exc, match=match):
        read_images(bad)


@pytest.mark.bad_input("8 coercions")
@pytest.mark.parametrize("resize", ["Down", "crop", 1, True])
def test_unknown_resize_is_refused_even_when_no_resize_is_needed(resize):
    with pytest.raises(ValueError, match="resize must be one of"):
        read_images(Image.new("RGB", (8, 8)), resize=resize)


@pytest.mark.bad_input("6 files")
def test_unreadable_files_are_named(tmp_path):
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "cut.png").write_bytes((lambda b: b[: len(b) // 2])(_png_bytes()))
    (tmp_path / "dir.png").mkdir()
    for name in ("text.png", "cut.png"):
        with pytest.raises(ValueError, match=name):
            load_image(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="dir.png"):
        load_image(tmp_path / "dir.png")


def _png_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.bad_input("8 coercions")
def test_resized_inputs_come_back_at_their_own_size(pipe):
    x = sample_images(1, size=16)
    u8 = ((x[0] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    odd = Image.fromarray(u8, "RGB").resize((15, 17))
    latent = invert(pipe, odd, "a cat", num_steps=3, resize="nearest")
    assert latent.metadata["input_sizes"] == [[17, 15]]
    out = reconstruct(pipe, latent).images
    assert out[0].size == (15, 17)
    h, w = latent.metadata["image_size"]
    assert (h, w) != (17, 15)
    assert reconstruct(pipe, latent, restore_size=False).images[0].size == (w, h)
    tensor_out = reconstruct(pipe, latent, output_type="pt").images
    assert tuple(tensor_out.shape[-2:]) == (17, 15)
    # no resize: nothing recorded, nothing resized
    assert "input_sizes" not in invert(pipe, x, "a cat", num_steps=3).metadata


@pytest.mark.bad_input("8 coercions")
@given(data=st.data())
def test_any_array_is_read_as_documented_or_refused_with_a_clear_error(data):
    dtype = data.draw(st.sampled_from([np.uint8, np.float32, np.float64, np.int16, np.bool_, np.uint16]))
    shape = tuple(data.draw(st.lists(st.integers(0, 5), min_size=1, max_size=5)))
    scale = data.draw(st.sampled_from([1.0, 255.0, -1.0, np.nan]))
    arr = (np.random.default_rng(0).random(shape) * scale).astype(dtype) if dtype != np.bool_ else np.zeros(shape, bool)
    keep = arr.copy()
    try:
        got = read_images(arr, multiple=1)
    except (ValueError, TypeError) as exc:
        assert str(exc)  # a message, never a bare error
        return
    finally:
        assert np.array_equal(arr, keep, equal_nan=arr.dtype.kind == "f")
    # accepted: only the documented kinds, read into [-1, 1] RGB
    assert dtype in (np.uint8, np.float32, np.float64)
    assert got.x.ndim == 4 and got.x.shape[1] == 3 and got.x.shape[0] >= 1
    assert float(got.x.min()) >= -1 and float(got.x.max()) <= 1
    if dtype != np.uint8:
        assert np.nanmin(arr) >= 0 and np.nanmax(arr) <= 1
