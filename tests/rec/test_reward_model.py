import numpy as np
import pytest
import torch

from livemind.errors import DataError
from livemind.rec.feedback import Impressions
from livemind.rec.reward_model import (
    Features,
    RewardModelConfig,
    calibration,
    load_reward_model,
    train_reward_model,
)


@pytest.fixture(scope="module")
def trained(tiny_world, tiny_rec):
    _, world = tiny_world
    imp = Impressions.from_world(world, tiny_rec.frame, tiny_rec.codes, "test-v1")
    train = imp.take(np.flatnonzero(imp.time < tiny_rec.split))
    model, losses = train_reward_model(RewardModelConfig(epochs=6, batch_size=512, history=5), train, tiny_rec.log,
                                       world.viewers.num_rows, world.streamers.num_rows, 8)
    return model, losses, imp


def test_training_lowers_the_loss(trained):
    _, losses, _ = trained
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


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
