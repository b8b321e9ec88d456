"""`TrainerSettings`: everything the Trainer is told, typed, in one frozen value.

The CLI builds it, `create_pipeline` takes it whole and hands `to_dict()` to the Trainer's
``custom_config``; `run_fn` and the components parse it back with `from_dict`, which rejects
unknown keys (a misspelt setting fails the run instead of being ignored).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, Mapping

from models.dcn import DCNConfig
from models.visual import VisualConfig
from spec.strict import known_fields
from tfx_pipeline import configs

DISTRIBUTIONS = ("default", "mirrored")


@dataclasses.dataclass(frozen=True)
class TrainerSettings:
  """The Trainer's settings.

  Attributes:
    model: the DCN's hyperparameters (`models.dcn.DCNConfig`).
    visual: the visual variant and its CNN (`models.visual.VisualConfig`).
    train_steps, eval_steps: the Trainer's budget in batches (all epochs together).
    batch_size: impressions per training batch.
    epochs: the train steps are split into this many Keras epochs (validation each).
    seed: initial weights and shuffling.
    impressions_per_ad: G: up to G impressions of one ad share a batch (paper 3.4.1).
    mixed_precision: Keras mixed_float16 policy (for GPUs).
    distribution: ``default`` (one device) or ``mirrored`` (tf.distribute.MirroredStrategy).
  """

  model: DCNConfig = DCNConfig()
  visual: VisualConfig = VisualConfig()
  train_steps: int = configs.TRAIN_STEPS
  eval_steps: int = configs.EVAL_STEPS
  batch_size: int = configs.TRAIN_BATCH_SIZE
  epochs: int = 3
  seed: int = 0
  impressions_per_ad: int = configs.IMPRESSIONS_PER_AD
  mixed_precision: bool = False
  distribution: str = "default"

  def __post_init__(self):
    if not isinstance(self.model, DCNConfig) or not isinstance(self.visual, VisualConfig):
      raise TypeError("model is a DCNConfig and visual a VisualConfig (from_dict parses dicts)")
    for name in ("train_steps", "eval_steps", "batch_size", "epochs", "impressions_per_ad"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"trainer setting {name} must be an integer >= 1, got {value!r}")
    if self.distribution not in DISTRIBUTIONS:
      raise ValueError(f"trainer setting distribution must be one of {', '.join(DISTRIBUTIONS)}, "
                       f"got {self.distribution!r}")

  def replace(self, **changes) -> "TrainerSettings":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> Dict[str, Any]:
    """Plain JSON values (tuples as lists), as TFX's custom_config carries them."""
    return json.loads(json.dumps(dataclasses.asdict(self)))

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "TrainerSettings":
    d = known_fields(cls, d, "trainer settings")
    d["model"] = DCNConfig.from_dict(d.get("model", {}))
    d["visual"] = VisualConfig.from_dict(d.get("visual", {}))
    return cls(**d)
