"""TrainerSettings: one typed value from the CLI to run_fn; unknown or bad settings stop early."""

import pytest

from models.dcn import DCNConfig
from models.visual import VisualConfig
from tfx_pipeline.settings import TrainerSettings


def test_round_trip_through_the_trainers_custom_config():
  s = TrainerSettings(model=DCNConfig(embedding_dim=8, history_match=(("ad_id", "clicked_ads"),)),
                      visual=VisualConfig(variant="none"), train_steps=7, seed=3, distribution="mirrored")
  d = s.to_dict()
  assert d["model"]["history_match"] == [["ad_id", "clicked_ads"]] and d["visual"]["variant"] == "none"
  assert TrainerSettings.from_dict(d) == s


@pytest.mark.parametrize("bad, message", [
    ({"epoch": 3}, r"unknown trainer settings \['epoch'\]"),
    ({"model": {"embedding_size": 8}}, r"unknown model hyperparameters \['embedding_size'\]"),
    ({"visual": {"variant": "resnet"}}, "visual variant must be one of"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"epochs": 2.5}, "epochs must be an integer >= 1, got 2.5"),
    ({"distribution": "tpu"}, "distribution must be one of default, mirrored, got 'tpu'"),
])
def test_bad_settings_are_refused_with_their_name(bad, message):
  with pytest.raises(ValueError, match=message):
    TrainerSettings.from_dict({**TrainerSettings().to_dict(), **bad})
