"""NonLocalBlock: shape, identity at zero BN weight, softmax rows, the C^-1/2 scale, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from instseg.layers import NonLocalBlock


@pytest.mark.parametrize("inter", [None, 3])
def test_shape_and_attention_rows_sum_to_one(inter: int | None) -> None:
    torch.manual_seed(0)
    block = NonLocalBlock(6, inter_channels=inter)
    x = torch.randn(2, 6, 5, 4)
    y, attn = block(x, return_attention=True)
    assert y.shape == x.shape
    assert attn.shape == (2, 20, 20)
    assert (attn >= 0).all()
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 20))
    torch.testing.assert_close(block(x), y)


@pytest.mark.parametrize("train", [True, False])
def test_zero_bn_weight_is_identity(train: bool) -> None:
    block = NonLocalBlock(4).train(train)
    torch.nn.init.zeros_(block.norm.weight)
    x = torch.randn(3, 4, 6, 6)
    torch.testing.assert_close(block(x), x)


def test_attention_is_scaled_dot_product_softmax() -> None:
    torch.manual_seed(1)
    block = NonLocalBlock(8, inter_channels=2)
    x = torch.randn(1, 8, 3, 3)
    q = torch.einsum("oc,chw->ohw", block.query.weight[:, :, 0, 0], x[0]).flatten(1)  # 2, 9
    k = torch.einsum("oc,chw->ohw", block.key.weight[:, :, 0, 0], x[0]).flatten(1)
    expected = torch.softmax(q.T @ k / math.sqrt(2), dim=-1)
    torch.testing.assert_close(block.attention(x)[0], expected)


def test_output_mixes_values_by_attention() -> None:
    torch.manual_seed(2)
    block = NonLocalBlock(4).eval()
    x = torch.randn(1, 4, 2, 3)
    y, attn = block(x, return_attention=True)
    v = block.value(x).flatten(2)[0]  # C, N
    relation = (attn[0] @ v.T).T.reshape(1, 4, 2, 3)
    torch.testing.assert_close(y, x + block.norm(block.out(relation)))


@pytest.mark.parametrize("train", [True, False])
def test_gradcheck_float64(train: bool) -> None:
    torch.manual_seed(3)
    block = NonLocalBlock(3, inter_channels=2).double().train(train)
    x = torch.randn(2, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,))
    params = tuple(block.parameters())
    assert torch.autograd.gradcheck(lambda *p: torch.func.functional_call(
        block, dict(zip((n for n, _ in block.named_parameters()), p)), (x.detach(),)), params)
