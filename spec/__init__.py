"""The bottom layer: the data contract and the names and choices every other package shares.

It imports no other package of the project (tests/test_import_layers.py walks the imports):

    spec  <-  models  <-  tfx_pipeline  <-  components  <-  pipeline / runners  <-  cscnn CLI
    spec  <-  serving, cscnn.data
"""

from spec.features import (CATEGORICAL, DEFAULT_SPEC, MULTI, NUMERIC, SEQUENCE, Feature, FeatureSpec,
                           SpecError, transformed_name)
from spec.files import dump, load

__all__ = ["CATEGORICAL", "DEFAULT_SPEC", "MULTI", "NUMERIC", "SEQUENCE", "Feature", "FeatureSpec", "SpecError",
           "transformed_name", "dump", "load"]
