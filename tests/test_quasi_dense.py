"""QDTrack's embedding head, ROI targets, quasi-dense loss and tracker (hand cases, an independent
brute-force loss, gradient checks, and tracking scenes with known identities)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from instseg.errors import InputError
from instseg.video.models.trackers.embedding import (BACKGROUND, IGNORED, QuasiDenseEmbedHead, assign_track_ids,
                                                     group_count, quasi_dense_loss, quasi_dense_targets,
                                                     sample_rois)
from instseg.video.models.trackers.iou import MaskIoUTracker
from instseg.video.models.trackers.quasi_dense import QuasiDenseConfig, QuasiDenseTracker

R2 = 1 / math.sqrt(2)


# --- the loss -------------------------------------------------------------------------------

def _case_one():
    """One key on track 5; references: same track, another track, background, and an ignored ROI
    whose huge embedding would dominate both terms if it were read."""
    key = torch.tensor([[1.0, 0.0]])
    ref = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [10.0, 10.0]])
    return key, ref, torch.tensor([5]), torch.tensor([5, 7, BACKGROUND, IGNORED])


def test_loss_hand_values_one_key():
    # dots 1 (pos), 0, 0.5 (negs): 0.25 * ln(1 + e^-1 + e^-0.5) = 0.170067
    # cosines 1, 0, 1/sqrt2: aux = (0 + 0 + (0.707107 - 0.3)^2) / 3 = 0.0552453
    losses = quasi_dense_loss(*_case_one())
    assert losses["loss_track"].item() == pytest.approx(0.25 * math.log(1 + math.exp(-1) + math.exp(-0.5)))
    assert losses["loss_track"].item() == pytest.approx(0.170067, abs=1e-6)
    assert losses["loss_track_aux"].item() == pytest.approx((R2 - 0.3) ** 2 / 3)
    assert losses["loss_track_aux"].item() == pytest.approx(0.0552453, abs=1e-7)


def test_loss_temperature_uses_scaled_cosine():
    # cos / 0.5 = 2, 0, 1.414214: 0.25 * ln(1 + e^-2 + e^(1.414214 - 2)) = 0.131478
    losses = quasi_dense_loss(*_case_one(), softmax_temp=0.5)
    assert losses["loss_track"].item() == pytest.approx(0.131478, abs=1e-6)


def _case_two():
    """Key 0 on track 1 (positive r0), key 1 on track 2 with no positive in the reference frame."""
    key = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    ref = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    return key, ref, torch.tensor([1, 2]), torch.tensor([1, BACKGROUND, 3])


def test_loss_hand_values_exclusion_and_hard_mining():
    # CE only over key 0 (dots 2 pos, 1 and 0 neg): 0.25 * ln(1 + e^-1 + e^-2) = 0.101901
    # aux over both keys: pos cos 1 -> 0; neg losses 0.165685 (k0,r1), 0 (k0,r2), 0 (k1,r0),
    # 0.165685 (k1,r1), 0.49 (k1,r2: cos 1 - 0.3)
    key, ref, kid, rid = _case_two()
    three = quasi_dense_loss(key, ref, kid, rid)
    assert three["loss_track"].item() == pytest.approx(0.101901, abs=1e-6)
    # 5 negatives > 3 per positive: the 3 hardest kept: (0.49 + 2 * 0.165685) / 4 = 0.205368
    assert three["loss_track_aux"].item() == pytest.approx((0.49 + 2 * (R2 - 0.3) ** 2) / 4)
    assert three["loss_track_aux"].item() == pytest.approx(0.205368, abs=1e-6)
    one = quasi_dense_loss(key, ref, kid, rid, neg_pos_ratio=1)  # only the hardest: 0.49 / 2
    assert one["loss_track_aux"].item() == pytest.approx(0.245)
    weighted = quasi_dense_loss(key, ref, kid, rid, loss_weight=1.0, aux_weight=2.0)
    assert weighted["loss_track"].item() == pytest.approx(4 * 0.101901, abs=4e-6)
    assert weighted["loss_track_aux"].item() == pytest.approx(2 * 0.205368, abs=2e-6)


def _brute_force(key, ref, kid, rid, margin=0.3, ratio=3):
    """QDTrack's loss written the slow way: the CE over every (positive, negative) pair of a row
    and the L2 term by sorting all negative pair losses."""
    rows, aux_pos, aux_neg = [], [], []
    for i in range(len(key)):
        if kid[i] < 0:
            continue
        pos = [j for j in range(len(ref)) if rid[j] == kid[i]]
        neg = [j for j in range(len(ref)) if rid[j] != kid[i] and rid[j] >= -1]
        cos = [float(torch.dot(key[i], ref[j]) / key[i].norm() / ref[j].norm()) for j in range(len(ref))]
        aux_pos += [(min(max(cos[j], 0.0), 1.0) - 1) ** 2 for j in pos]
        aux_neg += [min(max(cos[j] - margin, 0.0), 1.0) ** 2 for j in neg]
        if pos:
            dots = [float(torch.dot(key[i], ref[j])) for j in range(len(ref))]
            rows.append(math.log(1 + sum(math.exp(dots[n] - dots[p]) for p in pos for n in neg)))
    aux_neg = sorted(aux_neg, reverse=True)[:ratio * len(aux_pos)]
    return 0.25 * sum(rows) / len(rows), (sum(aux_pos) + sum(aux_neg)) / (len(aux_pos) + len(aux_neg))


def _random_pair(generator, k=7, r=9, d=5):
    key = torch.randn(k, d, generator=generator, dtype=torch.float64)
    ref = torch.randn(r, d, generator=generator, dtype=torch.float64)
    kid = torch.randint(-2, 4, (k,), generator=generator)
    rid = torch.randint(-2, 4, (r,), generator=generator)
    kid[0], rid[0] = 1, 1  # at least one positive pair
    return key, ref, kid, rid


def test_loss_equals_brute_force_on_random_pairs():
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for _ in range(100):
        key, ref, kid, rid = _random_pair(generator)
        losses = quasi_dense_loss(key, ref, kid, rid)
        ce, aux = _brute_force(key, ref, kid, rid)
        worst = max(worst, abs(losses["loss_track"].item() - ce), abs(losses["loss_track_aux"].item() - aux))
    assert worst < 1e-10


def test_loss_gradcheck_both_terms():
    key, ref, kid, rid = _random_pair(torch.Generator().manual_seed(3))
    for term in ("loss_track", "loss_track_aux"):
        assert torch.autograd.gradcheck(lambda k, r: quasi_dense_loss(k, r, kid, rid)[term],
                                        (key.clone().requires_grad_(), ref.clone().requires_grad_()))


def test_loss_gradients_reach_key_and_ref():
    key, ref, kid, rid = (t.clone() for t in _case_one())
    key.requires_grad_()
    ref.requires_grad_()
    losses = quasi_dense_loss(key, ref, kid, rid)
    for term in losses.values():
        gk, gr = torch.autograd.grad(term, (key, ref), retain_graph=True)
        assert gk.abs().sum() > 0 and gr.abs().sum() > 0
        assert gr[3].abs().sum() == 0  # the ignored ROI is in no pair


def test_loss_without_positives_is_zero_with_graph():
    key = torch.randn(3, 4, requires_grad=True)
    ref = torch.randn(2, 4, requires_grad=True)
    cases = [([1, -1, -2], [2, -1]),  # different tracks
             ([-1, -1, -1], [1, 1]),  # no key on a track
             ([], [1, 1])]  # no key at all
    for kid, rid in ((torch.tensor(k, dtype=torch.long), torch.tensor(r)) for k, r in cases):
        k = key[:len(kid)]
        losses = quasi_dense_loss(k, ref, kid, rid)
        total = losses["loss_track"] + losses["loss_track_aux"]
        assert total.item() == 0 and total.requires_grad
        total.backward()
        assert torch.isfinite(key.grad).all() and key.grad.abs().sum() == 0


def test_loss_row_without_negatives_is_zero_and_finite():
    key = torch.tensor([[1.0, 0.0]], requires_grad=True)
    ref = torch.tensor([[1.0, 0.0], [0.5, 0.0]], requires_grad=True)
    losses = quasi_dense_loss(key, ref, torch.tensor([4]), torch.tensor([4, 4]))
    assert losses["loss_track"].item() == 0  # log(1 + empty sum)
    losses["loss_track"].backward()
    assert torch.isfinite(key.grad).all() and torch.isfinite(ref.grad).all()


def test_loss_is_permutation_invariant():
    key, ref, kid, rid = _random_pair(torch.Generator().manual_seed(5))
    pk, pr = torch.randperm(len(key)), torch.randperm(len(ref))
    a = quasi_dense_loss(key, ref, kid, rid)
    b = quasi_dense_loss(key[pk], ref[pr], kid[pk], rid[pr])
    for term in a:
        assert a[term].item() == pytest.approx(b[term].item(), abs=1e-12)


def test_targets_pair_same_track_and_skip_ignored():
    keys, cols, targets = quasi_dense_targets(torch.tensor([3, -1, 5, -2]), torch.tensor([5, -2, -1, 3, 3]))
    assert keys.tolist() == [0, 2] and cols.tolist() == [0, 2, 3, 4]
    assert targets.tolist() == [[False, False, True, True], [True, False, False, False]]


# --- the head -------------------------------------------------------------------------------

def test_group_count_adapts():
    assert [group_count(c, 32) for c in (256, 64, 32, 48, 16, 6)] == [32, 32, 32, 24, 16, 6]
    assert group_count(6, 4) == 3
    head = QuasiDenseEmbedHead(32, conv_channels=48, fc_channels=64, embed_dim=16)
    assert [m.num_groups for m in head.modules() if isinstance(m, nn.GroupNorm)] == [24] * 4


def test_head_shapes():
    torch.manual_seed(0)
    head = QuasiDenseEmbedHead(32, conv_channels=32, fc_channels=256, embed_dim=128)
    assert head(torch.randn(5, 32, 7, 7)).shape == (5, 128)
    assert head(torch.zeros(0, 32, 7, 7)).shape == (0, 128)
    plain = QuasiDenseEmbedHead(8, num_convs=0, fc_channels=16, embed_dim=4, norm="none", roi_size=5)
    assert plain(torch.randn(2, 8, 5, 5)).shape == (2, 4)
    with pytest.raises(ValueError):
        QuasiDenseEmbedHead(8, norm="batch")


def _cosines(embeds, ids):
    cos = nn.functional.normalize(embeds, dim=1) @ nn.functional.normalize(embeds, dim=1).T
    same = ids[:, None] == ids[None, :]
    off_diagonal = ~torch.eye(len(ids), dtype=torch.bool)
    return cos[same & off_diagonal].mean().item(), cos[~same].mean().item()


def test_head_and_loss_learn_to_separate_tracks():
    torch.manual_seed(0)
    centres = torch.randn(3, 32, 7, 7)
    ids = torch.arange(3).repeat_interleave(4)
    head = QuasiDenseEmbedHead(32, conv_channels=32, fc_channels=256, embed_dim=128)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)

    def frame():
        return centres[ids] + 0.8 * torch.randn(len(ids), 32, 7, 7)

    key, ref = frame(), frame()
    before = sum(quasi_dense_loss(head(key), head(ref), ids, ids).values()).item()
    for _ in range(25):
        loss = sum(quasi_dense_loss(head(frame()), head(frame()), ids, ids).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = sum(quasi_dense_loss(head(key), head(ref), ids, ids).values()).item()
        same, different = _cosines(head(torch.cat([key, ref])), torch.cat([ids, ids]))
    assert after < 0.5 * before
    assert same > different + 0.3


# --- ROI targets and sampling ---------------------------------------------------------------

GT = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])


def test_assign_track_ids_boundaries():
    proposals = torch.tensor([[0.0, 0.0, 7.0, 10.0],  # IoU 0.7 exactly: positive
                              [0.0, 0.0, 6.9, 10.0],  # 0.69: ignored
                              [0.0, 0.0, 3.0, 10.0],  # 0.3 exactly: ignored
                              [0.0, 0.0, 2.9, 10.0],  # 0.29: background
                              [20.0, 20.0, 30.0, 30.0],  # the second box itself
                              [50.0, 50.0, 60.0, 60.0]])  # on nothing
    ids = assign_track_ids(proposals, GT, torch.tensor([3, 8]))
    assert ids.tolist() == [3, IGNORED, IGNORED, BACKGROUND, 8, BACKGROUND]
    assert assign_track_ids(proposals, GT[:0], torch.zeros(0, dtype=torch.long)).tolist() == [BACKGROUND] * 6
    assert assign_track_ids(proposals, GT, torch.tensor([3, 8]), pos_iou=0.5, neg_iou=0.5).tolist() == \
        [3, 3, BACKGROUND, BACKGROUND, 8, BACKGROUND]


def test_assign_track_ids_rejects_bad_ids():
    with pytest.raises(InputError, match="track ids"):
        assign_track_ids(GT, GT, torch.tensor([3]))
    with pytest.raises(InputError, match=">= 0"):
        assign_track_ids(GT, GT, torch.tensor([3, -1]))


def _proposals(generator):
    """10 positives (shifted ground truth, IoU >= 0.7), 100 background boxes, 5 ignored ones."""
    shifts = torch.rand(10, 1, generator=generator) * 0.8
    positives = GT[torch.arange(10) % 2] + shifts
    background = torch.tensor([40.0, 40.0, 48.0, 48.0]) + torch.rand(100, 1, generator=generator) * 60
    ignored = GT[:1].repeat(5, 1) + torch.tensor([4.0, 0.0, 4.0, 0.0])  # IoU 6/14
    return torch.cat([positives, background, ignored])


def test_sample_rois_counts_and_fraction():
    proposals = _proposals(torch.Generator().manual_seed(0))
    boxes, index = sample_rois(proposals, GT, num=16, generator=torch.Generator().manual_seed(1))
    ids = assign_track_ids(boxes, GT, torch.tensor([1, 2]))
    assert len(boxes) == 16 and (ids >= 0).sum() == 8 and (ids == BACKGROUND).sum() == 8
    assert (ids[:8] >= 0).all()  # positives first
    assert torch.equal(boxes, torch.cat([GT, proposals])[index]) and len(set(index.tolist())) == 16
    # only the 2 ground-truth boxes positive: at most 3 negatives each
    only_gt = sample_rois(proposals[10:], GT, generator=torch.Generator().manual_seed(1))[0]
    assert (assign_track_ids(only_gt, GT, torch.tensor([1, 2])) >= 0).sum() == 2 and len(only_gt) == 8
    assert len(sample_rois(proposals[10:], GT, neg_pos_ub=-1)[0]) == 102  # unbounded: all 100 negatives
    assert len(sample_rois(proposals[10:], GT[:0])[0]) == 3  # no positive: 3 * max(1, 0) negatives


def test_sample_rois_is_seeded():
    proposals = _proposals(torch.Generator().manual_seed(0))
    a = sample_rois(proposals, GT, num=16, generator=torch.Generator().manual_seed(1))[1]
    b = sample_rois(proposals, GT, num=16, generator=torch.Generator().manual_seed(1))[1]
    c = sample_rois(proposals, GT, num=16, generator=torch.Generator().manual_seed(2))[1]
    assert torch.equal(a, b) and not torch.equal(a, c)


# --- the tracker ----------------------------------------------------------------------------

def _box(x, y, size=10.0):
    return [x, y, x + size, y + size]


def _frame(objects, size=64):
    """Detections from (box, score, label, embedding) tuples; masks fill the boxes."""
    boxes = torch.tensor([o[0] for o in objects], dtype=torch.float32).reshape(-1, 4)
    masks = torch.zeros(len(objects), size, size, dtype=torch.bool)
    for m, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
        m[y0:y1, x0:x1] = True
    return {"boxes": boxes, "scores": torch.tensor([o[1] for o in objects]),
            "labels": torch.tensor([o[2] for o in objects], dtype=torch.int64), "masks": masks,
            "embeddings": torch.stack([torch.tensor(o[3], dtype=torch.float32) for o in objects]).reshape(-1, 3)}


EA, EB, EC = [5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]


def test_memo_keeps_identity_through_five_missing_frames():
    tracker = QuasiDenseTracker()
    first = tracker.update(_frame([(_box(5, 5), 0.9, 1, EA), (_box(40, 40), 0.9, 1, EB)])).tolist()
    seen = [first]
    for t in range(1, 12):
        a_present = not 3 <= t <= 7
        objects = [(_box(40, 40), 0.9, 1, EB)] + ([(_box(5 + 2 * t, 20), 0.9, 1, EA)] if a_present else [])
        seen.append(tracker.update(_frame(objects)).tolist())
    assert first == [1, 2]
    assert all(ids[0] == 2 for ids in seen[1:])
    assert [ids[1] for ids in seen[1:] if len(ids) == 2] == [1] * 6  # frames 1, 2 and 8..11


@pytest.mark.parametrize("gap, same", [(9, True), (10, False)])
def test_memo_forgets_after_ten_frames(gap, same):
    tracker = QuasiDenseTracker()
    tracker.update(_frame([(_box(5, 5), 0.9, 1, EA), (_box(40, 40), 0.9, 1, EB)]))
    for _ in range(gap):
        tracker.update(_frame([(_box(40, 40), 0.9, 1, EB)]))
    back = tracker.update(_frame([(_box(5, 5), 0.9, 1, EA), (_box(40, 40), 0.9, 1, EB)])).tolist()
    assert back == ([1, 2] if same else [3, 2])


def test_position_swap_keeps_appearance_ids_but_not_iou_ids():
    qd, iou = QuasiDenseTracker(), MaskIoUTracker()
    left, right = _box(5, 20), _box(40, 20)
    before = _frame([(left, 0.9, 1, EA), (right, 0.8, 1, EB)])
    frames = [before] * 3 + [_frame([(left, 0.9, 1, EB), (right, 0.8, 1, EA)])]
    qd_ids = [qd.update(f).tolist() for f in frames]
    iou_ids = [iou.update(f).tolist() for f in frames]
    assert qd_ids == [[1, 2]] * 3 + [[2, 1]]  # identities follow the objects
    assert iou_ids == [[1, 2]] * 4  # identities follow the places: swapped


def test_backdrop_prevents_false_match_to_lone_tracklet():
    """A weak detection next to A becomes a backdrop; a look-alike of it that appears when A is
    gone scores ~1 with A under a one-column softmax, but loses to the backdrop column."""
    def run(backdrop_frames):
        tracker = QuasiDenseTracker(QuasiDenseConfig(backdrop_frames=backdrop_frames))
        first = tracker.update(_frame([(_box(5, 5), 0.9, 1, EA), (_box(40, 40), 0.2, 1, EB)])).tolist()
        return first, tracker.update(_frame([(_box(40, 40), 0.9, 1, EB)])).tolist()
    assert run(1) == ([1, -1], [2])  # a new track, not A's
    assert run(0) == ([1, -1], [1])  # without backdrops: taken for A


def test_duplicates_are_removed_before_matching():
    tracker = QuasiDenseTracker()
    ids = tracker.update(_frame([(_box(5, 5), 0.8, 1, EA), (_box(5.5, 5), 0.95, 2, EB),  # IoU 0.90 > 0.7
                                 (_box(5, 12), 0.9, 1, EC),  # IoU 0.18 with the best: kept
                                 (_box(40, 40), 0.9, 1, EA), (_box(43, 40), 0.2, 1, EB)]))  # weak, IoU 0.54 > 0.3
    assert ids.tolist() == [-1, 1, 2, 3, -1]
    assert sorted(tracker.memo) == [1, 2, 3]


def test_weak_duplicate_is_removed_before_it_takes_softmax_mass():
    """D looks half like A, half like B; a weak look-alike of A on top of D (IoU 0.54 > 0.3) would,
    if kept, take A's column softmax from D and leave D unmatched."""
    tracker = QuasiDenseTracker()
    tracker.update(_frame([(_box(5, 5), 0.9, 1, EA), (_box(40, 40), 0.9, 1, EB)]))
    ids = tracker.update(_frame([(_box(40, 40), 0.95, 1, EB), (_box(5, 5), 0.9, 1, [2.5, 2.5, 0.0]),
                                 (_box(8, 5), 0.2, 1, EA)]))
    assert ids.tolist() == [2, 1, -1]


EA_PLUS = [6.0, 0.0, 0.0]  # as a backdrop, it would outscore A's tracklet for an A-like detection


def test_weak_look_alike_is_suppressed_not_tracked_nor_a_backdrop():
    tracker = QuasiDenseTracker()
    tracker.update(_frame([(_box(5, 5), 0.9, 1, EA)]))
    assert tracker.update(_frame([(_box(30, 5), 0.2, 1, EA_PLUS)])).tolist() == [-1]
    assert torch.equal(tracker.memo[1], torch.tensor(EA))  # not updated by the weak detection
    assert tracker.update(_frame([(_box(5, 5), 0.9, 1, EA)])).tolist() == [1]  # no backdrop took A's place


def test_detection_overlapping_a_better_one_is_no_backdrop():
    """A mid-score detection on A (IoU 0.54: kept by the 0.7 duplicate removal, cut by the 0.3
    backdrop NMS) must not linger as a backdrop that steals A's next match."""
    tracker = QuasiDenseTracker()
    assert tracker.update(_frame([(_box(5, 5), 0.9, 1, EA), (_box(8, 5), 0.5, 1, EA_PLUS)])).tolist() == [1, -1]
    assert tracker.update(_frame([(_box(5, 5), 0.9, 1, EA)])).tolist() == [1]


def test_momentum_update_value():
    tracker = QuasiDenseTracker()
    tracker.update(_frame([(_box(5, 5), 0.9, 1, [4.0, 0.0, 0.0])]))
    assert tracker.update(_frame([(_box(7, 5), 0.9, 1, [3.0, 1.0, 0.0])])).tolist() == [1]
    # 0.2 * (4, 0, 0) + 0.8 * (3, 1, 0)
    assert torch.allclose(tracker.memo[1], torch.tensor([3.2, 0.8, 0.0]))


def test_greedy_order_and_categories():
    tracker = QuasiDenseTracker()
    tracker.update(_frame([(_box(5, 5), 0.9, 1, EA)]))
    # both look like track 1: the higher score takes it; the other column is closed to it
    assert tracker.update(_frame([(_box(40, 5), 0.8, 1, EA), (_box(5, 40), 0.95, 1, EA)])).tolist() == [2, 1]
    # a look-alike of another category never matches
    assert tracker.update(_frame([(_box(5, 40), 0.95, 2, EA)])).tolist() == [3]


def test_quasi_dense_is_deterministic_and_resets():
    generator = torch.Generator().manual_seed(0)
    scenes = []
    for _ in range(6):
        xy = (torch.rand(5, 2, generator=generator) * 50).tolist()
        scores = torch.rand(5, generator=generator).round(decimals=1).tolist()  # ties on purpose
        labels = torch.randint(1, 3, (5,), generator=generator).tolist()
        embeds = torch.randn(5, 3, generator=generator).tolist()
        scenes.append(_frame([(_box(x, y), s, c, e) for (x, y), s, c, e in zip(xy, scores, labels, embeds)]))
    tracker = QuasiDenseTracker()
    first = [tracker.update(s).tolist() for s in scenes]
    tracker.reset()
    again = [tracker.update(s).tolist() for s in scenes]
    fresh = QuasiDenseTracker()
    assert first == again == [fresh.update(s).tolist() for s in scenes]
    for ids in first:
        out = [i for i in ids if i != -1]
        assert len(out) == len(set(out)) and all(i > 0 for i in out)


def test_quasi_dense_config_and_input_errors():
    assert QuasiDenseConfig.from_dict({"init_score": 0.8}).init_score == 0.8
    with pytest.raises(InputError, match="init_scor"):
        QuasiDenseConfig.from_dict({"init_scor": 0.8})
    with pytest.raises(InputError, match="momentum"):
        QuasiDenseConfig(momentum=1.5)
    frame = _frame([(_box(5, 5), 0.9, 1, EA)])
    del frame["embeddings"]
    with pytest.raises(InputError, match="frame 0.*embeddings"):
        QuasiDenseTracker().update(frame)
