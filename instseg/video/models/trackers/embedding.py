"""QDTrack's quasi-dense appearance embedding: the head, the ROI sampling and track-id targets
of a key/reference frame pair, and the contrastive loss.

Why quasi-dense: every sampled ROI of the key frame is contrasted with every sampled ROI of the
reference frame (hundreds of pairs per image pair, not a handful of ground-truth boxes), so the
embedding learns from the same crowded, imprecise boxes it will see at test time.

The constants follow QDTrack's BDD100K configuration (SysCV/qdtrack): ROIs with IoU >= 0.7 with
a ground-truth box take its track id, < 0.3 are background, the rest are ignored; 256 ROIs per
image, half positive, at most 3 negatives per positive; loss weights 0.25 (multi-positive
cross-entropy on raw dot products) and 1.0 (L2 on cosine similarity, negatives above a 0.3
margin only, hard-mined to 3 negatives per positive).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

from instseg.errors import InputError

BACKGROUND = -1  # a ROI on no object: a negative for every key
IGNORED = -2  # a ROI half on an object: in no pair at all


def group_count(channels: int, groups: int) -> int:
    """The largest number of GroupNorm groups <= ``groups`` that divides ``channels`` (QDTrack
    uses 32 groups of 256 channels; the cpu scale has 32 or 64 channels, a smoke test fewer)."""
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


class QuasiDenseEmbedHead(nn.Module):
    """ROI features [N, C, s, s] -> embeddings [N, embed_dim]: ``num_convs`` conv3x3 (+ GN) + ReLU,
    one fc + ReLU and a linear embedding, as QDTrack's head (no normalisation of the output: the
    loss works on raw dot products)."""

    def __init__(self, in_channels: int, num_convs: int = 4, conv_channels: int = 256, fc_channels: int = 1024,
                 embed_dim: int = 256, roi_size: int = 7, norm: str = "group", groups: int = 32):
        super().__init__()
        if norm not in ("group", "none"):
            raise ValueError(f"norm must be 'group' or 'none', not {norm!r}")
        layers: list[nn.Module] = []
        for i in range(num_convs):
            conv = nn.Conv2d(in_channels if i == 0 else conv_channels, conv_channels, 3, padding=1,
                             bias=norm == "none")
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
            layers.append(conv)
            if norm == "group":
                layers.append(nn.GroupNorm(group_count(conv_channels, groups), conv_channels))
            layers.append(nn.ReLU(inplace=True))
        self.convs = nn.Sequential(*layers)
        flat = (conv_channels if num_convs else in_channels) * roi_size * roi_size
        self.fc = nn.Linear(flat, fc_channels)
        self.embed = nn.Linear(fc_channels, embed_dim)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        nn.init.normal_(self.embed.weight, 0.0, 0.01)
        nn.init.zeros_(self.embed.bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.embed(F.relu(self.fc(self.convs(features).flatten(1))))


def _max_iou(boxes: Tensor, gt_boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Each box's largest IoU with a ground-truth box and that box's index (0 and 0 without any)."""
    if not len(gt_boxes):
        zeros = boxes.new_zeros(len(boxes))
        return zeros, zeros.long()
    return box_iou(boxes, gt_boxes).max(dim=1)


def assign_track_ids(proposals: Tensor, gt_boxes: Tensor, gt_track_ids: Tensor, pos_iou: float = 0.7,
                     neg_iou: float = 0.3) -> Tensor:
    """[N] int64: the track id of the ground-truth box a proposal overlaps most if that IoU is
    >= ``pos_iou``, ``BACKGROUND`` if it is < ``neg_iou``, else ``IGNORED`` (QDTrack's embedding
    assigner: MaxIoU 0.7/0.3, no low-quality matches)."""
    if len(gt_track_ids) != len(gt_boxes):
        raise InputError(f"{len(gt_boxes)} ground-truth boxes but {len(gt_track_ids)} track ids")
    if bool((gt_track_ids < 0).any()):
        raise InputError("ground-truth track ids must be >= 0 (negative ids mark background and ignored ROIs)")
    iou, index = _max_iou(proposals, gt_boxes)
    ids = torch.full((len(proposals),), IGNORED, dtype=torch.int64, device=proposals.device)
    ids[iou < neg_iou] = BACKGROUND
    positive = iou >= pos_iou
    ids[positive] = gt_track_ids.to(ids)[index[positive]]
    return ids


def sample_rois(proposals: Tensor, gt_boxes: Tensor, num: int = 256, pos_fraction: float = 0.5,
                neg_pos_ub: int = 3, generator: torch.Generator | None = None, pos_iou: float = 0.7,
                neg_iou: float = 0.3) -> tuple[Tensor, Tensor]:
    """QDTrack's per-image ROI sample: the ground-truth boxes are added to the proposals, then
    up to ``num * pos_fraction`` positives (IoU >= ``pos_iou``) and negatives (IoU < ``neg_iou``)
    up to ``num`` in all and at most ``neg_pos_ub`` per positive (at least ``neg_pos_ub``), each
    drawn uniformly. Returns the sampled boxes and their indices into ``cat([gt_boxes, proposals])``,
    positives first. (QDTrack balances positives over instances and negatives over IoU bins;
    uniform draws are the plain version of the same budget.)"""
    boxes = torch.cat([gt_boxes, proposals])
    iou, _ = _max_iou(boxes, gt_boxes)
    pos = torch.nonzero(iou >= pos_iou).flatten()
    neg = torch.nonzero(iou < neg_iou).flatten()
    num_pos = min(len(pos), int(num * pos_fraction))
    num_neg = min(len(neg), num - num_pos)
    if neg_pos_ub >= 0:
        num_neg = min(num_neg, int(neg_pos_ub * max(1, num_pos)))
    pos = pos[torch.randperm(len(pos), generator=generator)[:num_pos].to(pos.device)]
    neg = neg[torch.randperm(len(neg), generator=generator)[:num_neg].to(neg.device)]
    index = torch.cat([pos, neg])
    return boxes[index], index


def quasi_dense_targets(key_ids: Tensor, ref_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The pairs of a key/reference ROI set, from their assigned ids (``assign_track_ids``).

    Keys are the key-frame ROIs with a track id; the columns are the reference ROIs that are not
    ignored (positives and background). Returns the key indices, the column indices and the
    [keys, columns] bool matrix that is True where both ROIs are on the same track: each key's
    positive set."""
    keys = torch.nonzero(key_ids >= 0).flatten()
    cols = torch.nonzero(ref_ids >= BACKGROUND).flatten()
    targets = key_ids[keys][:, None] == ref_ids[cols][None, :]
    return keys, cols, targets


def _multi_positive_ce(sim: Tensor, targets: Tensor) -> Tensor:
    """Per key row with a positive: log(1 + sum_{k+} sum_{k-} exp(s(k-) - s(k+))), computed as
    softplus(logsumexp_{k-} s + logsumexp_{k+} -s) so that no [K, R, R] tensor is formed."""
    rows = targets.any(dim=1)
    sim, targets = sim[rows], targets[rows]
    has_neg = (~targets).any(dim=1, keepdim=True)
    # A row without negatives has loss 0; reading all its entries keeps its logsumexp finite.
    neg_lse = sim.masked_fill(targets & has_neg, -math.inf).logsumexp(dim=1)
    pos_lse = (-sim).masked_fill(~targets, -math.inf).logsumexp(dim=1)
    loss = F.softplus(neg_lse + pos_lse)
    return torch.where(has_neg.squeeze(1), loss, torch.zeros_like(loss))


def _l2_on_cosine(cos: Tensor, targets: Tensor, margin: float, neg_pos_ratio: int) -> Tensor:
    """QDTrack's auxiliary loss: (clamp(cos, 0, 1) - 1)^2 on positive pairs, clamp(cos - margin,
    0, 1)^2 on negative pairs, the negatives cut to the ``neg_pos_ratio * positives`` hardest
    (largest loss) ones; the mean over the pairs kept. (As in QDTrack, the clamp leaves a
    positive pair with negative cosine without gradient.)"""
    pos_loss = (cos[targets].clamp(0, 1) - 1) ** 2
    neg_loss = (cos[~targets] - margin).clamp(0, 1) ** 2
    if 0 <= neg_pos_ratio and len(neg_loss) > neg_pos_ratio * len(pos_loss):
        neg_loss = neg_loss[neg_loss.detach().topk(neg_pos_ratio * len(pos_loss)).indices]
    return (pos_loss.sum() + neg_loss.sum()) / (len(pos_loss) + len(neg_loss))


def quasi_dense_loss(key_embeds: Tensor, ref_embeds: Tensor, key_ids: Tensor, ref_ids: Tensor,
                     loss_weight: float = 0.25, aux_weight: float = 1.0, aux_margin: float = 0.3,
                     neg_pos_ratio: int = 3, softmax_temp: float = -1.0) -> dict[str, Tensor]:
    """QDTrack's tracking losses of one key/reference frame pair.

    ``key_embeds`` [K, D] / ``ref_embeds`` [R, D] are the embeddings of the two frames' ROIs and
    ``key_ids`` / ``ref_ids`` their assigned ids (a track id, ``BACKGROUND`` or ``IGNORED``).
    ``loss_track``: the multi-positive cross-entropy on the dot products (on cosine /
    ``softmax_temp`` when that is > 0), averaged over the keys with a positive in the reference
    frame. ``loss_track_aux``: the L2 loss on cosine similarity over all keys' pairs. Without a
    positive pair both are zero, still attached to the graph.
    """
    keys, cols, targets = quasi_dense_targets(key_ids, ref_ids)
    zero = (key_embeds.sum() + ref_embeds.sum()) * 0
    if not bool(targets.any()):
        return {"loss_track": zero, "loss_track_aux": zero.clone()}
    key, ref = key_embeds[keys], ref_embeds[cols]
    cos = F.normalize(key, dim=1) @ F.normalize(ref, dim=1).T
    sim = cos / softmax_temp if softmax_temp > 0 else key @ ref.T
    return {"loss_track": loss_weight * _multi_positive_ce(sim, targets).mean(),
            "loss_track_aux": aux_weight * _l2_on_cosine(cos, targets, aux_margin, neg_pos_ratio)}
