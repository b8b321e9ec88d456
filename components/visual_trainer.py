"""VisualTrainer: TFX's Trainer (its GenericExecutor and `run_fn` contract) with one more
input, the ad catalogue, so that training on images is a tracked artifact dependency.

The executor hands the catalogue's URI to `run_fn` as ``fn_args.custom_config["catalog_uri"]``
and, with the optional input ``pretrained`` (CataloguePretrain's model), that artifact's URI as
``custom_config["pretrained_uri"]``, from which `run_fn` starts the backbone; everything else is
the stock Trainer.
"""

from typing import Any, Dict, List, Optional

from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import trainer_pb2
from tfx.types import artifact_utils, channel, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import json_utils

CATALOG_KEY = "catalog"
CATALOG_URI = "catalog_uri"
PRETRAINED_KEY = "pretrained"
PRETRAINED_URI = "pretrained_uri"


class VisualTrainerSpec(types.ComponentSpec):
  PARAMETERS = dict(standard_component_specs.TrainerSpec.PARAMETERS)
  INPUTS = {**standard_component_specs.TrainerSpec.INPUTS,
            CATALOG_KEY: ChannelParameter(type=standard_artifacts.Examples),
            PRETRAINED_KEY: ChannelParameter(type=standard_artifacts.Model, optional=True)}
  OUTPUTS = dict(standard_component_specs.TrainerSpec.OUTPUTS)


class Executor(trainer_executor.GenericExecutor):

  def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    catalog = artifact_utils.get_single_instance(input_dict[CATALOG_KEY])
    custom = json_utils.loads(exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY) or "null") or {}
    custom[CATALOG_URI] = catalog.uri
    if input_dict.get(PRETRAINED_KEY):
      custom[PRETRAINED_URI] = artifact_utils.get_single_instance(input_dict[PRETRAINED_KEY]).uri
    exec_properties = {**exec_properties, standard_component_specs.CUSTOM_CONFIG_KEY: json_utils.dumps(custom)}
    super().Do(input_dict, output_dict, exec_properties)


class VisualTrainer(base_component.BaseComponent):
  """Trainer + ``catalog`` input (+ optional ``pretrained``). Outputs ``model`` and ``model_run``
  like the Trainer."""

  SPEC_CLASS = VisualTrainerSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

  def __init__(self, examples: types.BaseChannel, transform_graph: types.BaseChannel,
               schema: types.BaseChannel, catalog: types.BaseChannel, run_fn: str,
               train_args: trainer_pb2.TrainArgs, eval_args: trainer_pb2.EvalArgs,
               custom_config: Optional[Dict[str, Any]] = None,
               pretrained: Optional[types.BaseChannel] = None):
    spec = VisualTrainerSpec(
        examples=examples, transform_graph=transform_graph, schema=schema, catalog=catalog,
        pretrained=pretrained,
        run_fn=run_fn, train_args=train_args, eval_args=eval_args,
        custom_config=json_utils.dumps(custom_config or {}),
        model=channel.Channel(type=standard_artifacts.Model),
        model_run=channel.Channel(type=standard_artifacts.ModelRun))
    super().__init__(spec=spec)
