import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from livemind.rec.data.watch import History
from livemind.rec.live.index import LiveIndex
from livemind.rec.model.beam import GeneratorScorer, constrained_beam_search, prefix_bonus, recommend
from livemind.rec.model.generator import GatedAttention, GeneratorConfig, OneLiveGenerator

NOW = 1767650000.0


def make_history(B: int, T: int, K: int, L: int = 3, seed: int = 0, n_pad: int = 0) -> History:
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[:, :n_pad] = False
    return History(
        codes=torch.randint(0, K, (B, T, L), generator=g), kind=torch.randint(0, 9, (B, T), generator=g),
        watch=torch.rand(B, T, generator=g) * 600, time=NOW - torch.rand(B, T, generator=g).double() * 86400 * 3,
        valid=valid, now=torch.full((B,), NOW, dtype=torch.float64))


def test_gated_attention_with_qk_norm_matches_hand_computation():
    torch.manual_seed(0)
    cfg = GeneratorConfig(d_model=4, n_heads=1, codebook_size=8)
    attn = GatedAttention(cfg)
    x = torch.randn(1, 3, 4)
    mask = torch.ones(3, 3, dtype=torch.bool).tril()[None, None]
    out, _ = attn(x, mask)
    eps = torch.finfo(torch.float32).eps
    rms = lambda t: t / torch.sqrt((t * t).mean(-1, keepdim=True) + eps)  # noqa: E731 - RMSNorm, weight 1
    q = rms(x[0] @ attn.q.weight.T)
    k, v = (x[0] @ attn.kv.weight.T).split(4, dim=-1)
    k = rms(k)
    scores = (q @ k.T) / math.sqrt(4)  # (3, 3)
    scores = scores.masked_fill(~mask[0, 0], float("-inf"))
    y = torch.softmax(scores, -1) @ v
    y = y * torch.sigmoid(x[0] @ attn.gate.weight.T + attn.gate.bias)  # output gate from the query side
    expected = y @ attn.o.weight.T
    assert torch.allclose(out[0], expected, atol=1e-6)


def test_time_features_are_exact_for_unix_seconds():
    from livemind.rec.model.generator import time_features

    t = torch.tensor([1767571200.0 + 20.5 * 3600], dtype=torch.float64)  # Monday 20:30 UTC
    f = time_features(t, t + 7200)
    hour = 20.5
    assert f.dtype == torch.float32
    assert torch.allclose(f[0, :2], torch.tensor([math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24)]), atol=1e-6)
    assert torch.allclose(f[0, 2:4], torch.tensor([0.0, 1.0]), atol=1e-6)  # Monday = day 0
    assert f[0, 4] == 0.0 and abs(f[0, 5].item() - math.log1p(2.0)) < 1e-6


def test_ablations_remove_gate_and_qk_norm():
    attn = GatedAttention(GeneratorConfig(d_model=8, n_heads=2, qk_norm=False, time_gate=False))
    assert attn.gate is None and attn.q_norm is None and attn.k_norm is None


@pytest.mark.parametrize("decode", ["mtp", "ar"])
def test_causal_and_padding_masks(decode):
    torch.manual_seed(0)
    model = OneLiveGenerator(GeneratorConfig(d_model=16, n_heads=2, n_layers=2, codebook_size=8, decode=decode)).eval()
    hist = make_history(2, 6, 8, n_pad=2)
    x, valid = model.embed(hist)
    h, _ = model.main(x, valid)
    x2 = x.clone()
    x2[:, 4:] = torch.randn_like(x2[:, 4:])  # change the future: positions < 4 must not move
    h2, _ = model.main(x2, valid)
    assert torch.allclose(h[:, :4], h2[:, :4], atol=1e-6) and not torch.allclose(h[:, 4:], h2[:, 4:])
    x3 = x.clone()
    x3[:, :2] = torch.randn_like(x3[:, :2])  # change padding: real positions must not move
    h3, _ = model.main(x3, valid)
    assert torch.allclose(h[:, 2:], h3[:, 2:], atol=1e-6)


@pytest.mark.parametrize("decode", ["mtp", "ar"])
def test_forward_shapes_and_weighted_loss(decode):
    torch.manual_seed(0)
    cfg = GeneratorConfig(d_model=16, n_heads=2, n_layers=2, codebook_size=8, decode=decode, level_weights=(1.0, 0.5, 0.25))
    model = OneLiveGenerator(cfg)
    hist, target = make_history(4, 5, 8), torch.randint(0, 8, (4, 3))
    logits = model(hist, target)
    assert [tuple(lg.shape) for lg in logits] == [(4, 8)] * 3
    loss, ces = model.loss(hist, target)
    # L = (1 * CE1 + 0.5 * CE2 + 0.25 * CE3) / 1.75
    manual = [F.cross_entropy(lg, target[:, i]).item() for i, lg in enumerate(logits)]
    assert ces == pytest.approx(manual, abs=1e-6)
    assert loss.item() == pytest.approx((manual[0] + 0.5 * manual[1] + 0.25 * manual[2]) / 1.75, abs=1e-6)


@pytest.mark.parametrize("decode", ["mtp", "ar"])
def test_training_lowers_the_loss(decode):
    torch.manual_seed(0)
    model = OneLiveGenerator(GeneratorConfig(d_model=32, n_heads=2, n_layers=2, codebook_size=8, decode=decode))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    hist = make_history(64, 6, 8, seed=1)
    target = (hist.codes[:, -1] + 1) % 8  # next SID = last SID shifted: learnable
    first = None
    for _ in range(60):
        loss, _ = model.loss(hist, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.5 * first


class TableScorer:
    """A deterministic scorer: log-probabilities from a random table indexed by the prefix."""

    def __init__(self, K: int, seed: int) -> None:
        self.K, self.seed = K, seed

    def _lp(self, prefixes: np.ndarray) -> np.ndarray:
        rows = []
        for p in prefixes:
            rng = np.random.default_rng([self.seed, len(p), *p.tolist()])
            z = rng.normal(size=self.K)
            rows.append(z - np.log(np.exp(z).sum()))
        return np.array(rows)

    def start(self) -> np.ndarray:
        self.prefixes = np.zeros((1, 0), dtype=np.int64)
        return self._lp(self.prefixes)

    def extend(self, parents: np.ndarray, codes: np.ndarray) -> np.ndarray:
        self.prefixes = np.concatenate([self.prefixes[parents], codes[:, None]], axis=1)
        return self._lp(self.prefixes)


def _snapshot(sids: list[tuple[int, ...]], levels: int):
    idx = LiveIndex(levels, "v")
    for room, sid in enumerate(sids):
        idx.upsert(room, sid)
    return idx.snapshot()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=40),
       st.integers(1, 12), st.integers(0, 10_000))
def test_fast_beam_search_matches_dense_reference(sids, beam, seed):
    snap = _snapshot(sids, 3)
    fast = constrained_beam_search(TableScorer(6, seed), snap, beam)
    ref = constrained_beam_search(TableScorer(6, seed), snap, beam, dense=True)
    assert np.array_equal(fast[0], ref[0]) and np.allclose(fast[1], ref[1])
    live = set(map(tuple, snap.codes.tolist()))
    assert all(tuple(s) in live for s in fast[0].tolist())
    if beam >= len(live):  # a wide enough beam is exhaustive: every live SID, ranked by its score
        table = TableScorer(6, seed)
        exhaustive = sorted(live, key=lambda s: -sum(table._lp(np.array([s[:i]]))[0, s[i]] for i in range(3)))
        assert [tuple(s) for s in fast[0].tolist()] == exhaustive


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=40),
       st.integers(1, 12), st.integers(0, 10_000))
def test_beam_search_with_a_prior_bonus_matches_dense_reference(sids, beam, seed):
    snap = _snapshot(sids, 3)
    prior = np.random.default_rng(seed).normal(scale=3.0, size=len(snap.rooms))
    bonus = prefix_bonus(snap, prior)
    fast = constrained_beam_search(TableScorer(6, seed), snap, beam, bonus=bonus)
    ref = constrained_beam_search(TableScorer(6, seed), snap, beam, dense=True, bonus=bonus)
    assert np.array_equal(fast[0], ref[0]) and np.allclose(fast[1], ref[1])
    table = TableScorer(6, seed)
    lp = {tuple(s): sum(table._lp(np.array([s[:i]]))[0, s[i]] for i in range(3)) for s in snap.codes.tolist()}
    assert np.allclose(fast[1], [lp[tuple(s)] for s in fast[0].tolist()])  # scores stay log P(SID)
    if beam >= len(lp):  # exhaustive: every live SID, ordered by log P + the best prior of its rooms
        best = {sid: max(p for s, p in zip(snap.codes.tolist(), prior) if tuple(s) == sid) for sid in lp}
        assert [tuple(s) for s in fast[0].tolist()] == sorted(lp, key=lambda s: -(lp[s] + best[s]))


def test_prefix_bonus_is_the_best_prior_under_each_prefix():
    snap = _snapshot([(0, 1, 2), (0, 1, 3), (4, 0, 0)], 3)
    bonus = prefix_bonus(snap, np.array([1.0, 5.0, -2.0]))
    assert bonus == {(0,): 5.0, (0, 1): 5.0, (0, 1, 2): 1.0, (0, 1, 3): 5.0, (4,): -2.0, (4, 0): -2.0, (4, 0, 0): -2.0}
    with pytest.raises(ValueError, match="2 prior scores for 3 live rooms"):
        prefix_bonus(snap, np.zeros(2))


@pytest.mark.parametrize("decode", ["mtp", "ar"])
@pytest.mark.parametrize("exact_up_to", [0, 64])  # beam search; every live room scored
def test_recommend_returns_only_live_rooms(decode, exact_up_to):
    torch.manual_seed(0)
    model = OneLiveGenerator(GeneratorConfig(d_model=16, n_heads=2, n_layers=2, codebook_size=8, decode=decode))
    rng = np.random.default_rng(0)
    snap = _snapshot([tuple(int(c) for c in rng.integers(0, 8, 3)) for _ in range(25)], 3)
    recs = recommend(model, make_history(1, 7, 8), snap, top_k=10, beam=16, exact_up_to=exact_up_to)
    assert len(recs) == 10 and {r for r, _ in recs} <= set(snap.rooms.tolist())
    assert [s for _, s in recs] == sorted((s for _, s in recs), reverse=True)
    cold = recommend(model, make_history(1, 0, 8), snap, top_k=5, exact_up_to=exact_up_to)  # no history
    assert len(cold) == 5 and {r for r, _ in cold} <= set(snap.rooms.tolist())
    assert recommend(model, make_history(1, 7, 8), _snapshot([], 3), top_k=5, exact_up_to=exact_up_to) == []


def semantic(model: OneLiveGenerator, seed: int = 1) -> OneLiveGenerator:
    """Random codebook centroids for a generator built with code_dim > 0."""
    c = model.cfg
    model.set_code_vectors(torch.randn(c.levels, c.codebook_size, c.code_dim, generator=torch.Generator().manual_seed(seed)))
    return model


def small_model(decode: str, code_dim: int) -> OneLiveGenerator:
    """A seeded 2-layer generator over 8 codes, with random centroids when code_dim > 0."""
    torch.manual_seed(0)
    model = OneLiveGenerator(GeneratorConfig(d_model=16, n_heads=2, n_layers=2, codebook_size=8, decode=decode,
                                             code_dim=code_dim)).eval()
    return semantic(model) if code_dim else model


def test_semantic_codes_add_projected_centroids_in_and_out():
    torch.manual_seed(0)
    model = semantic(OneLiveGenerator(GeneratorConfig(d_model=8, n_heads=2, codebook_size=6, code_dim=3)))
    C = model.code_vectors
    codes = torch.tensor([[0, 5, 2]])
    for lv in range(3):
        want = model.code_emb[lv].weight[codes[0]] + C[lv, codes[0]] @ model.code_in[lv].weight.T
        assert torch.allclose(model.code_embed(lv, codes)[0], want, atol=1e-6)
    h = torch.randn(2, 8)
    for lv in range(3):
        want = h @ model.heads[lv].weight.T + (h @ model.code_out[lv].weight.T) @ C[lv].T
        assert torch.allclose(model.level_logits(lv, h), want, atol=1e-5)
    # two codes with the same centroid and the same free weights are one code to the model
    with torch.no_grad():
        model.code_vectors[0, 4] = model.code_vectors[0, 1]
        model.heads[0].weight[4] = model.heads[0].weight[1]
    lg = model.level_logits(0, h)
    assert torch.equal(lg[:, 4], lg[:, 1])
    with pytest.raises(ValueError, match=r"code vectors of shape \(3, 6, 4\), the generator expects \(3, 6, 3\)"):
        model.set_code_vectors(torch.zeros(3, 6, 4))
    with pytest.raises(ValueError, match="code_dim must be non-negative, got -1"):
        GeneratorConfig(code_dim=-1)


@pytest.mark.parametrize("decode,code_dim", [("mtp", 0), ("ar", 0), ("mtp", 4), ("ar", 4)])
def test_scorer_agrees_with_teacher_forced_forward(decode, code_dim):
    model = small_model(decode, code_dim)
    hist, target = make_history(1, 5, 8), torch.tensor([[3, 5, 1]])
    with torch.no_grad():
        logits = model(hist, target)
    scorer = GeneratorScorer(model, hist)
    lp1 = scorer.start()
    lp2 = scorer.extend(np.array([0]), np.array([3]))
    lp3 = scorer.extend(np.array([0]), np.array([5]))
    for lp, lg in zip((lp1, lp2, lp3), logits):
        assert np.allclose(lp, torch.log_softmax(lg, -1).numpy(), atol=1e-5)


@pytest.mark.parametrize("decode", ["mtp", "ar"])
def test_main_computes_only_the_last_positions_when_asked(decode):
    model = small_model(decode, 0)
    x, valid = model.embed(make_history(3, 6, 8, n_pad=2))
    x = x.detach().requires_grad_(True)
    h, (k, v) = model.main(x, valid)
    h2, (k2, v2) = model.main(x, valid, last=2)
    assert h2.shape == (3, 2, 16)
    assert torch.allclose(h2, h[:, -2:], atol=1e-6) and torch.equal(k2, k) and torch.equal(v2, v)
    # the gradient reaching the inputs is the same as through the full stack's last positions
    g = torch.autograd.grad(h[:, -2:].sum(), x)[0]
    g2 = torch.autograd.grad(h2.sum(), x)[0]
    assert torch.allclose(g, g2, atol=1e-6) and g2[:, :2].abs().sum() == 0  # padding gets none


@pytest.mark.parametrize("code_dim", [0, 4])
def test_one_encoding_serves_forward_and_sid_log_prob(code_dim):
    model = small_model("mtp", code_dim)
    hist = make_history(2, 5, 8, n_pad=1)
    target = torch.tensor([[3, 5, 1], [7, 6, 5]])
    cand = torch.tensor([[[3, 5, 1], [0, 0, 7]], [[1, 1, 1], [7, 6, 5]]])
    enc = model.encode(hist)
    assert enc.h.shape == (2, 1, 16) and enc.valid.shape == (2, 6)
    for a, b in zip(model(hist, target, enc), model(hist, target)):
        assert torch.equal(a, b)
    assert torch.equal(model.sid_log_prob(hist, cand, enc), model.sid_log_prob(hist, cand))
    with pytest.raises(ValueError, match="only an MTP generator"):
        small_model("ar", 0).encode(hist)


@pytest.mark.parametrize("decode,code_dim", [("mtp", 0), ("ar", 0), ("mtp", 4)])
def test_sid_log_prob_sums_the_teacher_forced_levels(decode, code_dim):
    model = small_model(decode, code_dim)
    hist = make_history(2, 5, 8, n_pad=1)
    cand = torch.tensor([[[3, 5, 1], [0, 0, 7], [3, 5, 2]], [[1, 1, 1], [7, 6, 5], [2, 4, 6]]])  # (B=2, C=3, L=3)
    with torch.no_grad():
        lp = model.sid_log_prob(hist, cand)
        for b in range(2):
            one = History(*(t[b:b + 1] for t in (hist.codes, hist.kind, hist.watch, hist.time, hist.valid, hist.now)))
            for c in range(3):
                logits = model(one, cand[b, c][None])
                want = sum(torch.log_softmax(lg, -1)[0, cand[b, c, lv]] for lv, lg in enumerate(logits))
                assert lp[b, c].item() == pytest.approx(want.item(), abs=1e-5)
    assert lp.shape == (2, 3)


def test_live_softmax_restricts_each_level_to_allowed_codes():
    model = OneLiveGenerator(GeneratorConfig(levels=2, codebook_size=4, level_weights=(1.0, 3.0), d_model=8, n_heads=2))
    logits = [torch.zeros(1, 4), torch.tensor([[0.0, math.log(3.0), 5.0, 5.0]])]
    target = torch.tensor([[1, 1]])
    allowed = torch.tensor([[[True, True, False, False], [True, True, False, False]]])
    loss, ces = model.weighted_loss(logits, target, allowed)
    # level 1: uniform over 2 allowed codes -> log 2; level 2: softmax over (0, log 3) -> -log(3/4)
    assert ces == pytest.approx([math.log(2), math.log(4 / 3)], abs=1e-6)
    assert loss.item() == pytest.approx((math.log(2) + 3 * math.log(4 / 3)) / 4, abs=1e-6)
    unmasked, _ = model.weighted_loss(logits, target)
    assert unmasked.item() > loss.item()


def prior_model(decode: str = "mtp", code_dim: int = 0) -> OneLiveGenerator:
    torch.manual_seed(0)
    model = OneLiveGenerator(GeneratorConfig(d_model=16, n_heads=2, n_layers=2, codebook_size=8, decode=decode,
                                             room_signals=4, code_dim=code_dim)).eval()
    with torch.no_grad():
        model.log_lp_scale.fill_(math.log(0.5))  # a room's score: 0.5 log P(SID) + prior
    return semantic(model) if code_dim else model


def test_room_scores_add_the_prior_mlp_to_log_p_sid():
    model = prior_model()
    hist = make_history(2, 5, 8)
    cand = torch.tensor([[[3, 5, 1], [0, 0, 7]], [[1, 1, 1], [7, 6, 5]]])
    sig = torch.rand(2, 2, 4, generator=torch.Generator().manual_seed(3))
    lin1, lin2 = model.room_prior[0], model.room_prior[2]
    want_prior = (F.gelu(sig @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias)[..., 0]
    with torch.no_grad():
        assert torch.allclose(model.prior(sig), want_prior, atol=1e-6)
        assert torch.allclose(model.room_scores(hist, cand, sig), 0.5 * model.sid_log_prob(hist, cand) + want_prior,
                              atol=1e-5)
    with pytest.raises(ValueError, match="3 room signals, the generator's prior reads 4"):
        model.prior(torch.zeros(2, 3))
    assert torch.equal(small_model("mtp", 0).prior(torch.ones(2, 5)), torch.zeros(2))  # no prior: no score
    with pytest.raises(ValueError, match="room_signals must be non-negative, got -1"):
        GeneratorConfig(room_signals=-1)


def test_content_affinity_is_the_cosine_of_mean_history_and_candidate_sid_vectors():
    model = prior_model(code_dim=4)
    hist = make_history(1, 3, 8, n_pad=1)  # two real tokens
    cand = torch.tensor([[[3, 5, 1], [0, 0, 7]]])
    C = model.code_vectors

    def vec(sid) -> torch.Tensor:
        return C[0, sid[0]] + C[1, sid[1]] + C[2, sid[2]]

    h = (vec(hist.codes[0, 1]) + vec(hist.codes[0, 2])) / 2
    want = torch.stack([F.cosine_similarity(vec(c), h, dim=0) for c in cand[0]])
    assert torch.allclose(model.affinity(hist, cand)[0], want, atol=1e-6)
    sig = torch.rand(1, 2, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lin1, lin2 = model.room_prior[0], model.room_prior[2]
        x = torch.cat([sig, want[None, :, None]], -1)
        prior = (F.gelu(x @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias)[..., 0]
        assert torch.allclose(model.room_scores(hist, cand, sig), 0.5 * model.sid_log_prob(hist, cand) + prior, atol=1e-5)
    with pytest.raises(ValueError, match="reads the content affinity too"):
        model.prior(sig)


@pytest.mark.parametrize("decode,code_dim", [("mtp", 0), ("ar", 0), ("mtp", 4)])
@pytest.mark.parametrize("exact_up_to", [0, 64])
def test_recommend_with_a_prior_ranks_rooms_by_log_p_plus_prior(decode, code_dim, exact_up_to):
    model = prior_model(decode, code_dim)
    rng = np.random.default_rng(1)
    snap = _snapshot([tuple(int(c) for c in rng.integers(0, 8, 3)) for _ in range(12)], 3)
    sig = rng.normal(size=(12, 4)).astype(np.float32)
    hist = make_history(1, 6, 8)
    with pytest.raises(ValueError, match="pass signals"):
        recommend(model, hist, snap, top_k=5)
    recs = recommend(model, hist, snap, top_k=12, beam=12, signals=sig, exact_up_to=exact_up_to)  # beam >= live rooms
    with torch.no_grad():
        exact = model.room_scores(hist, torch.from_numpy(snap.codes)[None], torch.from_numpy(sig)[None])[0].numpy()
    want = sorted(zip(snap.rooms.tolist(), exact.tolist()), key=lambda rs: (-rs[1], rs[0]))
    assert [r for r, _ in recs] == [r for r, _ in want]
    assert np.allclose([s for _, s in recs], [s for _, s in want], atol=1e-4)
    if code_dim:
        return
    # a viewer's favourite room (a large prior) is recommended first even through a narrow beam
    fav = int(np.argmin(exact))
    sig[fav] = 0.0
    with torch.no_grad():
        model.room_prior[2].bias.zero_()
        model.room_prior[0].bias.zero_()
        model.room_prior[2].weight.fill_(-1.0)
        model.room_prior[0].weight.fill_(1.0)  # prior = -sum(gelu(sum of signals)): a room with zero signals is best
    sig[np.arange(12) != fav] = 5.0
    assert recommend(model, hist, snap, top_k=1, beam=1, signals=sig, exact_up_to=exact_up_to)[0][0] == snap.rooms[fav]


def test_embeddings_start_small_and_only_matrices_decay():
    from livemind.rec.model.train import param_groups

    torch.manual_seed(0)
    model = OneLiveGenerator(GeneratorConfig(d_model=64, n_heads=4, codebook_size=256, room_signals=5))
    embs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    assert len(embs) == 3 + 2 + 2  # codes per level, kind, watch bucket, chosen code of levels 1..2
    assert all(abs(e.std().item() - 0.02) < 0.004 for e in embs)
    hist = make_history(4, 10, 256)
    tokens = sum(model.code_embed(lv, hist.codes[..., lv]) for lv in range(3)) + model.kind_emb(hist.kind)
    assert tokens.std().item() < 0.06  # four N(0, 0.02) embeddings: std 0.04, not ~2 as at N(0, 1)
    decay, rest = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and rest["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in rest["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for p in rest["params"]}
    assert {"bos", "norm.weight", "log_lp_scale", "room_prior.0.bias", "blocks.0.n1.weight"} <= no_decay
    assert len(decay["params"]) + len(rest["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("decode", ["mtp", "ar"])
@pytest.mark.parametrize("exact_up_to", [0, 64])
def test_requests_encoded_in_one_batch_decode_as_they_do_alone(decode, exact_up_to):
    from livemind.rec.model.beam import encode_requests

    model = small_model(decode, 0)
    hists = [make_history(1, T, 8, seed=T) for T in (0, 3, 7)]
    snap = _snapshot([(a, b, c) for a in range(3) for b in range(2) for c in range(4)], 3)
    for hist, enc in zip(hists, encode_requests(model, hists)):
        alone = recommend(model, hist, snap, top_k=5, beam=8, exact_up_to=exact_up_to)
        batched = recommend(model, hist, snap, top_k=5, beam=8, encoded=enc, exact_up_to=exact_up_to)
        assert [r for r, _ in batched] == [r for r, _ in alone]
        assert np.allclose([s for _, s in batched], [s for _, s in alone], atol=1e-5)



@pytest.mark.parametrize("decode, code_dim, with_prior", [("mtp", 0, False), ("mtp", 4, True), ("ar", 0, True)])
@pytest.mark.parametrize("exact_up_to", [0, 10, 64])  # beam search; 9 rooms or fewer scored, the rest searched; all scored
def test_a_batch_of_requests_decodes_as_each_does_alone(decode, code_dim, with_prior, exact_up_to):
    from livemind.rec.model.beam import recommend_batch

    model = prior_model(decode, code_dim) if with_prior else small_model(decode, code_dim)
    rng = np.random.default_rng(0)
    snaps = [_snapshot([(a, b, c) for a in range(3) for b in range(2) for c in range(4)], 3),
             _snapshot([tuple(int(x) for x in rng.integers(0, 8, 3)) for _ in range(9)], 3),
             _snapshot([], 3),  # nothing live: no rooms
             _snapshot([(1, 2, 3)], 3)]
    hists = [make_history(1, T, 8, seed=T) for T in (0, 5, 3, 9)]
    sigs = [rng.random((len(s.rooms), 4)).astype(np.float32) if with_prior else None for s in snaps]
    batched = recommend_batch(model, hists, snaps, top_k=6, beam=5, signals=sigs, exact_up_to=exact_up_to)
    for h, snap, sig, got in zip(hists, snaps, sigs, batched):
        alone = recommend(model, h, snap, top_k=6, beam=5, signals=sig, exact_up_to=exact_up_to)
        assert [r for r, _ in got] == [r for r, _ in alone]
        assert np.allclose([x for _, x in got], [x for _, x in alone], atol=1e-5)
    assert batched[2] == [] and len(batched[3]) == 1


def test_inference_reads_folded_centroid_projections_that_follow_every_weight_change():
    model = small_model("mtp", 4)
    h, codes = torch.randn(5, 16), torch.randint(0, 8, (2, 7))

    def unfolded() -> tuple[torch.Tensor, torch.Tensor]:  # the training path: gradients on, nothing folded
        with torch.enable_grad():
            return model.level_logits(1, h).detach(), model.code_embed(2, codes).detach()

    def folded() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            return model.level_logits(1, h).clone(), model.code_embed(2, codes).clone()

    def same() -> bool:
        return all(torch.allclose(a, b, atol=1e-5) for a, b in zip(folded(), unfolded()))

    assert same()
    before = folded()
    with torch.no_grad():  # an optimiser step: in place
        model.heads[1].weight.add_(0.5)
        model.code_in[2].weight.mul_(-2.0)
    assert same() and not torch.allclose(folded()[0], before[0]) and not torch.allclose(folded()[1], before[1])
    model.set_code_vectors(torch.randn(3, 8, 4))  # new centroids
    assert same()
    other = small_model("mtp", 4)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1)
    model.load_state_dict(other.state_dict())  # a checkpoint loaded into the serving model
    assert same()
    with torch.inference_mode():
        assert torch.allclose(model.level_logits(1, h), other.level_logits(1, h), atol=1e-6)
