import numpy as np
import pytest
import torch

from livemind.errors import DataError
from livemind.rec.alignment.reward_model import (
    Features,
    RewardModel,
    RewardModelConfig,
    calibration,
    load_reward_model,
    train_reward_model,
)
from livemind.rec.data.feedback import Impressions


@pytest.fixture(scope="module")
def trained(tiny_world, tiny_rec):
    _, world = tiny_world
    imp = Impressions.from_world(world, tiny_rec.frame, tiny_rec.codes, "test-v1")
    train = imp.take(np.flatnonzero(imp.time < tiny_rec.split))
    model, losses = train_reward_model(RewardModelConfig(epochs=6, batch_size=256, history=5, lr=1e-2), train, tiny_rec.log,
                                       world.viewers.num_rows, world.streamers.num_rows, 8)
    return model, losses, imp


def test_training_beats_the_base_rates(trained, tiny_rec):
    # (held-out log-loss is not asserted here: this world's SIDs are random codes, pure noise to fit)
    model, _, imp = trained
    train = imp.take(np.flatnonzero(imp.time < tiny_rec.split))
    x = Features.of(train, tiny_rec.log, 5)
    labels = {k: torch.from_numpy(v).float() for k, v in train.labels.items()}
    start = RewardModel(model.cfg, **{k: v for k, v in model.shape.items()}, tokenizer_version="test-v1")
    start.init_base_rates(train)
    with torch.no_grad():
        assert float(model.loss(x, labels)[0]) < float(start.loss(x, labels)[0]) - 0.05  # the whole training set


def test_expectations_are_click_times_conditional(trained, tiny_rec):
    model, _, imp = trained
    pred = model.predict(Features.of(imp, tiny_rec.log, 5, np.arange(50)))
    torch.testing.assert_close(pred["purchase"], pred["p_click"] * pred["purchase_given_click"])
    torch.testing.assert_close(pred["watch_minutes"], pred["p_click"] * pred["watch_given_click"])
    assert model.objectives(Features.of(imp, tiny_rec.log, 5, np.arange(50)), ("gift", "click")).shape == (50, 2)


def test_calibration_on_held_out(trained, tiny_rec):
    model, _, imp = trained
    cal = calibration(model, imp.take(np.flatnonzero(imp.time >= tiny_rec.split)), tiny_rec.log)
    assert set(cal.rows) == {"click", "like", "comment", "follow", "gift", "purchase", "watch_minutes"}
    assert cal.rows["click"]["ece"] < 0.1  # the click rate is learnt, not only ranked
    assert abs(cal.rows["click"]["predicted"] - cal.rows["click"]["observed"]) < 0.05


def test_save_load_and_tokenizer_version_check(trained, tmp_path):
    model, _, _ = trained
    model.save(tmp_path / "rm")
    again = load_reward_model(tmp_path / "rm", "test-v1")
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    with pytest.raises(DataError, match="trained on tokenizer test-v1's SIDs, but the generator and live index use other"):
        load_reward_model(tmp_path / "rm", "other")
    with pytest.raises(DataError, match="no reward_model.json"):
        load_reward_model(tmp_path, "test-v1")
