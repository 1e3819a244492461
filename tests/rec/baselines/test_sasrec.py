import numpy as np
import pytest
import torch

from livemind.rec.baselines.sasrec import (
    SASRec,
    SASRecConfig,
    pad_left,
    repeat_bucket,
    train_sasrec,
    uniform_negatives,
    unseen_negatives,
)
from livemind.rec.eval.protocol import evaluate_full, evaluate_sampled, leave_one_out


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="n_items must be at least 1, got 0"):
        SASRecConfig(n_items=0)
    with pytest.raises(ValueError, match="d_model 10 must be divisible by n_heads 4"):
        SASRecConfig(n_items=5, d_model=10, n_heads=4)


def test_hidden_states_are_causal():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=20, d_model=8, n_heads=2, max_len=6)).eval()
    a = torch.tensor([[0, 3, 4, 5, 6, 7]])
    b = torch.tensor([[0, 3, 4, 5, 9, 11]])  # differs only from position 4 on
    ha, hb = model.hidden(a), model.hidden(b)
    assert torch.allclose(ha[:, :4], hb[:, :4], atol=1e-6)
    assert not torch.allclose(ha[:, 4:], hb[:, 4:])
    with pytest.raises(ValueError, match="longer than max_len 6"):
        model.hidden(torch.ones(1, 7, dtype=torch.long))


def test_repeat_term_by_hand():
    model = SASRec(SASRecConfig(n_items=9, d_model=4, repeat_aware=True)).eval()
    with torch.no_grad():
        model.repeat_bias.weight[:, 0] = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
        model.last_bias.fill_(10.0)
    seq = torch.tensor([[0, 2, 5, 2, 7, 2, 2, 2]])
    cand = torch.tensor([[2, 5, 7, 9]])
    # item 2 occurs 5 times (bucket 4 -> 4.0) and is not last... the last item is 2: +10
    # item 5 once -> 1.0; item 7 once -> 1.0; item 9 never -> 0.0
    assert model.repeat_term(seq, cand).tolist() == [[14.0, 1.0, 1.0, 0.0]]
    assert repeat_bucket(torch.tensor([0, 1, 2, 3, 4, 5, 9])).tolist() == [0, 1, 2, 3, 3, 4, 4]
    # per position: position 2 (seq[:3] = 0, 2, 5) sees item 2 once and 5 as last
    per_pos = model.repeat_term(seq, cand[:, None, :].expand(1, 8, 4), torch.ones(8, 8, dtype=torch.bool).tril())
    assert per_pos[0, 2].tolist() == [1.0, 11.0, 0.0, 0.0]
    plain = SASRec(SASRecConfig(n_items=9, d_model=4))
    assert plain.repeat_term(seq, cand).tolist() == [[0.0] * 4]


def test_pad_left_and_uniform_negatives():
    assert pad_left([np.array([1, 2, 3]), np.array([4])], 2).tolist() == [[2, 3], [0, 4]]
    rng = np.random.default_rng(0)
    pos = rng.integers(1, 4, size=(50, 7))
    neg = uniform_negatives(3)(rng, pos, np.arange(50))
    assert neg.min() >= 1 and neg.max() <= 3 and not np.any(neg == pos)



def test_unseen_negatives_are_never_items_the_user_had():
    seqs = [np.array([1, 2, 3]), np.array([4, 5]), np.array([1, 6])]
    sample = unseen_negatives(7, seqs)
    rng = np.random.default_rng(0)
    rows = np.array([0, 1, 2, 0, 2])
    neg = sample(rng, np.ones((5, 40), dtype=np.int64), rows)
    allowed = [{4, 5, 6, 7}, {1, 2, 3, 6, 7}, {2, 3, 4, 5, 7}]
    for j, r in enumerate(rows):
        assert set(neg[j].tolist()) == allowed[r]  # 40 draws: every unseen item, nothing else
    with pytest.raises(ValueError, match="a user had all 3 items"):
        unseen_negatives(3, [np.array([3, 1, 2, 2])])


def test_block_follows_the_papers_layout():
    """With the attention output and the feed-forward zeroed, a block is LN_f(LN_q(x)): the normalised
    queries, not the raw input, carry the residual."""
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=5, d_model=6, n_heads=2, max_len=4)).eval()
    block = model.blocks[0]
    with torch.no_grad():
        for layer in (block.o, block.ff[3]):
            layer.weight.zero_()
            layer.bias.zero_()
    x = torch.randn(2, 4, 6) * 3 + 1
    mask = torch.ones(4, 4, dtype=torch.bool).tril()[None, None]
    expected = torch.nn.functional.layer_norm(torch.nn.functional.layer_norm(x, (6,), eps=1e-8), (6,), eps=1e-8)
    assert torch.allclose(block(x, mask), expected, atol=1e-5)

def cyclic_sequences(n_users: int = 300, n_items: int = 30, length: int = 12) -> dict[int, np.ndarray]:
    """Each user walks the items in order (i -> i + 1), starting anywhere: next item is predictable."""
    rng = np.random.default_rng(1)
    return {u + 1: (rng.integers(0, n_items) + np.arange(length)) % n_items + 1 for u in range(n_users)}


def test_training_lowers_loss_and_learns_the_pattern():
    seqs = cyclic_sequences()
    split = leave_one_out(seqs)
    cfg = SASRecConfig(n_items=split.n_items, d_model=16, max_len=10, dropout=0.1, epochs=40, batch_size=64, lr=1e-2)
    model, losses = train_sasrec(cfg, split.train)
    assert losses[-1] < 0.5 * losses[0]
    sampled = evaluate_sampled(model.score, split, cfg.max_len, n_neg=20)
    assert sampled["hr@10"] >= 0.95 and sampled["n"] == 300
    full = evaluate_full(model.score, split, cfg.max_len)
    assert full["hr@10"] >= 0.9


def test_leave_one_out_split_exactly():
    split = leave_one_out({1: np.array([5, 6, 7, 8]), 2: np.array([1, 2]), 3: np.array([3, 4, 9])})
    assert [s.tolist() for s in split.train] == [[5, 6], [1, 2], [3]]
    assert split.users.tolist() == [0, 2]
    assert [h.tolist() for h in split.history] == [[5, 6, 7], [3, 4]]
    assert split.target.tolist() == [8, 9] and split.n_items == 9


def test_sampled_and_full_ranking_metrics_by_hand():
    split = leave_one_out({1: np.array([1, 2, 3]), 2: np.array([4, 5, 6])})
    items = 20

    def oracle(seq, cand):  # the target scores highest
        return (cand == torch.tensor([[3], [6]])[: len(cand)]).float()

    def constant(seq, cand):  # every candidate ties: rank 1 + 10 / 2 = 6 among 10 negatives
        return torch.zeros(cand.shape)

    split.n_items = items
    r = evaluate_sampled(oracle, split, 5, n_neg=10)
    assert r == {"hr@10": 1.0, "ndcg@10": 1.0, "n": 2}
    r = evaluate_sampled(constant, split, 5, n_neg=10)
    assert r["hr@10"] == 1.0 and r["ndcg@10"] == pytest.approx(1 / np.log2(7))
    r = evaluate_sampled(lambda s, c: -oracle(s, c), split, 5, n_neg=10)  # the target last: rank 11
    assert r["hr@10"] == 0.0
    # full ranking: 20 items minus 2 history items -> 17 rivals; worst rank 18, constant ties rank 9.5
    r = evaluate_full(oracle, split, 5)
    assert r["hr@10"] == 1.0
    r = evaluate_full(constant, split, 5)
    assert r["hr@10"] == 1.0 and r["ndcg@10"] == pytest.approx(1 / np.log2(10.5))
