import math

import torch
import torch.nn.functional as F

from livemind.rec.tokenizer.fusion import ContentFusion, FusionConfig, RoomTower, ViewerTower, in_batch_softmax_loss

CFG = FusionConfig(content_dim=6, hidden_dim=4, out_dim=3, id_buckets=5, viewer_buckets=7)


def test_shapes_and_unit_norm():
    torch.manual_seed(0)
    r = RoomTower(CFG)(torch.randn(10, 6), torch.randn(10, 6), torch.arange(10))
    u = ViewerTower(CFG)(torch.arange(10) * 1000)  # hashed into 7 buckets
    assert r.shape == (10, 3) and u.shape == (10, 3)
    assert torch.allclose(r.norm(dim=-1), torch.ones(10)) and torch.allclose(u.norm(dim=-1), torch.ones(10))


def test_gate_mixes_layer_normalised_id_and_content():
    torch.manual_seed(0)
    f = ContentFusion(CFG)
    with torch.no_grad():
        f.gate_logit.fill_(math.log(0.25 / 0.75))  # λ = 0.25
    x30, xpool, s = torch.randn(2, 6), torch.randn(2, 6), torch.tensor([3, 8])
    mllm = F.layer_norm(f.mllm(torch.cat([x30, xpool], -1)), (4,))
    idv = F.layer_norm(f.id_emb.weight[torch.tensor([3, 3])], (4,))  # 8 % 5 == 3: same bucket
    expected = 0.25 * idv + 0.75 * mllm
    assert torch.allclose(f(x30, xpool, s), expected, atol=1e-6)


def test_in_batch_softmax_matches_hand_computation():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    r = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # row 0 logits (T=1): [1, 0.6] -> loss = -log(e^1 / (e^1 + e^0.6)); row 1: [0, 0.8] -> -log(e^0.8 / (1 + e^0.8))
    l0 = -math.log(math.e / (math.e + math.exp(0.6)))
    l1 = -math.log(math.exp(0.8) / (1 + math.exp(0.8)))
    loss = in_batch_softmax_loss(u, r, torch.tensor([0, 1]), torch.tensor([1.0, 3.0]), temperature=1.0)
    assert abs(loss.item() - (l0 + 3 * l1) / 4) < 1e-6
    # the same item twice is not its own negative: both rows see only their own positive -> loss 0
    assert in_batch_softmax_loss(u, r, torch.tensor([5, 5]), torch.ones(2), 1.0).item() == 0.0
    # a hard negative adds one column; masked where not ok
    h = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    with_h = in_batch_softmax_loss(u, r, torch.tensor([0, 1]), torch.ones(2), 1.0, h, torch.tensor([True, False]))
    l0h = -math.log(math.e / (math.e + math.exp(0.6) + 1.0))
    assert abs(with_h.item() - (l0h + l1) / 2) < 1e-6
