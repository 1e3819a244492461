"""How far can any ranker of live rooms get on the generator benchmark's world, and what does
content add? The analysis behind the generator's open bar (docs/history.md).

At each of the 1,500 held-out requests of `rec_quality.py` (same world, tokenizer, split and
seeded targets) every live room is scored by a softmax regression over a few features. Its weights
are fit on 3,000 *other* watches of the held-out day, never on the evaluated ones. Features:
- identity: the room's watches in the last hour, the viewer's past watches of the streamer, a
  follow flag, whether it is the streamer watched last;
- the trained generator (`runs/bench_rec/gen-onelive`, written by rec_quality.py): log P(SID),
  and log P(level-1 code) alone;
- two references that only a simulator has: the viewer's true taste · the segment's content
  vector (what drives the simulated clicks), and the share of the viewer's past watches whose
  segment had the candidate segment's category.
Also linear probes of the product category (8 classes) from the content embedding x30, the room
tower's output x_ia and the level-1 centroid: how much of the category survives each stage.

Run: python benchmarks/rec_ceiling.py   (after rec_quality.py; ~3 minutes)
Prints tables and, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from livemind.config import load_config
from livemind.rec.baselines.popularity import PopularityRanker
from livemind.rec.data.feedback import ViewerState
from livemind.rec.data.prepare import RecData, prepare
from livemind.rec.eval.abtest import ground_truth
from livemind.rec.model.checkpoint import load_generator
from livemind.rec.tokenizer.fit import TokenizerConfig, fit_or_load
from livemind.world.simulator import WorldConfig, simulate_world

console = Console()
FEATURES = ("popularity", "familiarity", "follow", "last", "log P(SID)", "log P(level 1)", "taste·content (truth)",
            "category share (truth)")
SETS = {
    "identity (popularity, familiarity, follow, last)": [0, 1, 2, 3],
    "generator: log P(SID)": [4],
    "generator: log P(level-1 code)": [5],
    "identity + log P(SID)": [0, 1, 2, 3, 4],
    "identity + log P(SID) + log P(level 1)": [0, 1, 2, 3, 4, 5],
    "truth: category share": [7],
    "identity + category share (truth)": [0, 1, 2, 3, 7],
    "identity + taste·content (truth)": [0, 1, 2, 3, 6],
}


def segment_category(sim) -> np.ndarray:
    """Category of every simulator segment: the product's, or the streamer's while chatting."""
    return np.where(sim.seg_product >= 0, sim.product_category[np.maximum(sim.seg_product, 0)],
                    sim.streamer_category[sim.room_streamer[sim.seg_room]])


class Features:
    def __init__(self, data: RecData, sim, gen, state: ViewerState, max_history: int) -> None:
        self.data, self.sim, self.gen, self.state, self.H = data, sim, gen, state, max_history
        self.category = segment_category(sim)
        self.popularity = PopularityRanker(data.live)  # its one-hour window

    def at(self, row: int) -> tuple[np.ndarray, int]:
        """(live rooms x features, index of the watched room or -1) for one request."""
        log, d, sim = self.data.log, self.data, self.sim
        v, t = int(log.viewer[row]), float(log.time[row])
        rooms, segs = d.live.live_segments(t)
        s = d.live.streamer_of(rooms)
        pop = self.popularity.watches(log, rooms, t)
        past = slice(log.first[row], row)
        n = len(rooms)
        fam = self.state.watches(np.full(n, v), s, t)
        follow = self.state.follows(np.full(n, v), s, t).astype(float)
        last = (s == log.streamer[row - 1]).astype(float) if row > log.first[row] else np.zeros(n)
        with torch.inference_mode():
            hist, _ = log.batch(np.array([row]), self.H)
            cand = torch.from_numpy(d.codes[segs])
            lp = self.gen.sid_log_prob(hist, cand[None])[0].numpy()
            x, valid = self.gen.embed(hist)
            h, _ = self.gen.main(x, valid)
            lp1 = torch.log_softmax(self.gen.level_logits(0, h[:, -1]), -1)[0, cand[:, 0]].numpy()
        seg_now = sim.segment_index(rooms, t)
        taste = sim.seg_vectors[seg_now] @ sim.taste[v]
        hist_cat = self.category[sim.segment_index(log.room[past], log.time[past])]
        share = (hist_cat[None, :] == self.category[seg_now][:, None]).mean(1) if len(hist_cat) else np.zeros(n)
        target = np.flatnonzero(rooms == log.room[row])
        return (np.stack([np.log1p(pop), np.log1p(fam), follow, last, lp, lp1, taste, share], 1),
                int(target[0]) if len(target) else -1)

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features (B, C, F) padded over candidates, mask (B, C), target index (B,)."""
        feats, targets = zip(*(self.at(int(r)) for r in rows))
        C = max(len(f) for f in feats)
        X = np.zeros((len(rows), C, len(FEATURES)), dtype=np.float32)
        M = np.zeros((len(rows), C), dtype=bool)
        for i, f in enumerate(feats):
            X[i, :len(f)], M[i, :len(f)] = f, True
        return torch.from_numpy(X), torch.from_numpy(M), torch.tensor(targets)


def fit_and_hit(train, test, cols: list[int], steps: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Softmax regression over the live rooms on `train`; (hit@10 per test request, weights per raw feature)."""
    (X, M, y), (Xt, Mt, yt) = train, test
    X, Xt = X[..., cols], Xt[..., cols]
    mu, sd = X[M].mean(0), X[M].std(0) + 1e-6
    X, Xt = (X - mu) / sd, (Xt - mu) / sd
    torch.manual_seed(0)
    lin = torch.nn.Linear(len(cols), 1)
    opt = torch.optim.Adam(lin.parameters(), lr=0.05)
    ok = y >= 0
    for _ in range(steps):
        loss = F.cross_entropy(lin(X).squeeze(-1).masked_fill(~M, -1e9)[ok], y[ok])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        s = lin(Xt).squeeze(-1).masked_fill(~Mt, -1e9)
    own = s.gather(1, yt.clamp(min=0)[:, None])
    rank = (s > own).sum(1) + 0.5 * ((s == own) & Mt).sum(1) - 0.5  # ties count half
    return ((rank < 10) & (yt >= 0)).numpy(), (lin.weight[0].detach() / sd).numpy()


def category_probes(data: RecData, tok, sim, n: int = 40_000) -> dict[str, float]:
    """Held-out accuracy of a linear probe of the product category from each representation."""
    frame = data.frame
    seg = sim.segment_index(frame.room, frame.start_time + 1.0)
    products = np.flatnonzero(sim.seg_product[seg] >= 0)
    y = torch.from_numpy(segment_category(sim)[seg][products])
    x30 = tok.encoder.encode(frame.text)
    xia, _ = tok.encode_vectors(x30, frame.pooled(x30), frame.streamer)
    level1 = tok.quantizer.centroids[0][data.codes[:, 0]]
    idx = np.random.default_rng(0).permutation(len(products))
    tr, te = idx[:n], idx[n:2 * n]
    out = {}
    for name, x in (("content embedding x30", x30), ("room tower x_ia", xia), ("level-1 centroid", level1)):
        X = torch.tensor(x[products], dtype=torch.float32)
        torch.manual_seed(0)
        lin = torch.nn.Linear(X.shape[1], int(y.max()) + 1)
        opt = torch.optim.Adam(lin.parameters(), lr=0.01)
        for _ in range(300):
            loss = F.cross_entropy(lin(X[tr]), y[tr])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            out[name] = float((lin(X[te]).argmax(1) == y[te]).float().mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world-config", default="configs/world/rec.yaml")
    parser.add_argument("--tokenizer-config", default="configs/rec/tokenizer.yaml")
    parser.add_argument("--generator", default="runs/bench_rec/gen-onelive", help="trained by rec_quality.py")
    parser.add_argument("--out", default="runs/bench_rec", help="where rec_quality.py cached the tokenizer")
    parser.add_argument("--targets", type=int, default=1500)
    parser.add_argument("--fit-watches", type=int, default=3000)
    args = parser.parse_args()
    t0 = time.perf_counter()
    wcfg = load_config(args.world_config, WorldConfig)
    world = simulate_world(wcfg)
    split = wcfg.start_time + wcfg.days * 86400 * 2 / 3
    tcfg = dataclasses.replace(load_config(args.tokenizer_config, TokenizerConfig), train_until=split)
    tok = fit_or_load(world, tcfg, wcfg, Path(args.out), console.print)
    data = prepare(world, tok, split, n_eval=args.targets, seed=0)
    gen = load_generator(args.generator, tok.version)
    sim = ground_truth(world)
    feats = Features(data, sim, gen, ViewerState.from_world(world), gen.cfg.max_history)
    others = np.setdiff1d(data.log.examples(start=split), data.eval_rows)
    fit_rows = np.sort(np.random.default_rng(1).choice(others, args.fit_watches, replace=False))
    train, test = feats.batch(fit_rows), feats.batch(data.eval_rows)
    console.print(f"[dim]{time.perf_counter() - t0:.0f} s: features of {len(fit_rows):,} + {len(data.eval_rows):,} "
                  f"requests[/dim]")
    repeat = data.log.is_repeat(data.eval_rows)
    table = Table(title=f"Live rooms ranked by a softmax regression, HR@10 on {len(data.eval_rows):,} held-out targets")
    for col in ("features", "HR@10", "new", "repeat", "weight of log P(SID)"):
        table.add_column(col, justify="left" if col == "features" else "right")
    hr = {}
    for name, cols in SETS.items():
        hit, w = fit_and_hit(train, test, cols)
        hr[name] = float(hit.mean())
        table.add_row(name, f"{hit.mean():.3f}", f"{hit[~repeat].mean():.3f}", f"{hit[repeat].mean():.3f}",
                      f"{w[cols.index(4)]:.3f}" if 4 in cols else "")
    console.print(table)
    probes = category_probes(data, tok, sim)
    t2 = Table(title="Product category (8 classes) from a linear probe, held-out segments")
    t2.add_column("representation")
    t2.add_column("accuracy", justify="right")
    for name, acc in probes.items():
        t2.add_row(name, f"{acc:.3f}")
    console.print(t2)
    console.print(json.dumps({
        "hr10_identity": round(hr["identity (popularity, familiarity, follow, last)"], 4),
        "hr10_generator_exact": round(hr["generator: log P(SID)"], 4),
        "hr10_identity_generator": round(hr["identity + log P(SID) + log P(level 1)"], 4),
        "hr10_identity_category_truth": round(hr["identity + category share (truth)"], 4),
        "hr10_identity_taste_truth": round(hr["identity + taste·content (truth)"], 4),
        "probe_x30": round(probes["content embedding x30"], 4), "probe_xia": round(probes["room tower x_ia"], 4),
        "probe_level1": round(probes["level-1 centroid"], 4), "n_targets": int(len(data.eval_rows)),
        "generator": args.generator, "seconds": round(time.perf_counter() - t0, 1),
    }), soft_wrap=True)


if __name__ == "__main__":
    main()
