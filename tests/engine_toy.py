"""A tiny detection-contract model and dataset for the engine tests and the DDP worker.

The model follows torchvision's training contract (``model(images, targets) -> dict`` of loss
terms, each a mean over the images of the batch, so DDP's gradient average equals the
single-process one). Dropout and the dataset's augmentation draw on the global torch, numpy and
python RNGs, so a resume that fails to restore any of them gives different weights.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

SHAPE = (3, 4, 4)


class ToyDetector(nn.Module):
    """Two loss terms; ``bad_at=(k, value)`` makes ``loss_aux`` equal ``value`` (NaN/inf) on the
    k-th training forward (0-based), with a gradient path to the weights."""

    def __init__(self, dropout: float = 0.0, bad_at: tuple[int, float] | None = None):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(SHAPE)), 8), nn.ReLU(), nn.Dropout(dropout))
        self.reg = nn.Linear(8, 2)
        self.aux = nn.Linear(8, 1)
        self.bad_at = bad_at
        self.calls = 0

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        features = self.body(torch.stack(images))
        y = torch.stack([t["y"] for t in targets])
        aux = self.aux(features).squeeze(1)
        losses = {"loss_reg": nn.functional.mse_loss(self.reg(features), y),
                  "loss_aux": nn.functional.smooth_l1_loss(aux, y.sum(1))}
        if self.bad_at is not None and self.calls == self.bad_at[0]:
            losses["loss_aux"] = losses["loss_aux"] * self.bad_at[1]
        self.calls += 1
        return losses


class ToyDataset(Dataset):
    """``n`` fixed random images with a linear regression target; ``augment`` flips (python RNG)
    and adds noise (numpy RNG)."""

    def __init__(self, n: int = 24, augment: bool = False):
        self.n = n
        self.augment = augment
        self.true_weight = torch.randn(2, int(np.prod(SHAPE)), generator=torch.Generator().manual_seed(1234))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image = torch.randn(SHAPE, generator=torch.Generator().manual_seed(index))
        target = {"y": self.true_weight @ image.flatten() / 4, "image_id": torch.tensor(index)}
        if self.augment:
            if random.random() < 0.5:
                image = image.flip(-1)
            image = image + torch.from_numpy(np.random.normal(0.0, 0.1, SHAPE)).float()
        return image, target


def collate(batch: list[tuple[Tensor, dict[str, Tensor]]]) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Detection collate: a tuple of lists (images and targets may differ in size)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def make_model(seed: int = 0, **kwargs) -> ToyDetector:
    """The same initial weights for a given seed, in any process."""
    torch.manual_seed(seed)
    return ToyDetector(**kwargs)
