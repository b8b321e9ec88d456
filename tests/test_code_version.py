"""The code fingerprint that keys TFX's cache: it follows the code's bytes and paths only, and
every component that runs the project's code carries it, so `pipeline run --cache` re-runs them
after a code change while TFX's own data components stay cached."""

import json
import os

import pytest

from models.visual import VisualConfig
from spec.choices import CATALOGUE
from tfx_pipeline.code_version import CODE_PACKAGES, CODE_VERSION_KEY, PROJECT_ROOT, code_fingerprint
from tfx_pipeline.settings import TrainerSettings

PACKAGES = ("pkg_a", "pkg_b")
# TFX's own components: they run TFX's code on the data and need no fingerprint.
TFX_OWN = {"CsvExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
           "latest_blessed_model_resolver", "Pusher"}
IN_CUSTOM_CONFIG = {"Transform", "Trainer", "VisualTrainer"}


def _tree(root):
  for package, files in {"pkg_a": {"__init__.py": "", "m.py": "X = 1\n"},
                         "pkg_b": {"__init__.py": "", "sub/n.py": "Y = 2\n"}}.items():
    for name, text in files.items():
      path = os.path.join(root, package, name)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "w") as f:
        f.write(text)
  return str(root)


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


def test_fingerprint_changes_with_a_files_bytes_and_with_a_new_or_renamed_file(tmp_path):
  root = _tree(tmp_path)
  base = code_fingerprint(root, PACKAGES)
  assert len(base) == 16 and base == code_fingerprint(root, PACKAGES)
  _write(os.path.join(root, "pkg_a", "m.py"), "X = 2\n")
  edited = code_fingerprint(root, PACKAGES)
  assert edited != base
  _write(os.path.join(root, "pkg_a", "m.py"), "X = 1\n")
  assert code_fingerprint(root, PACKAGES) == base
  _write(os.path.join(root, "pkg_b", "sub", "new.py"), "")
  assert code_fingerprint(root, PACKAGES) != base
  os.remove(os.path.join(root, "pkg_b", "sub", "new.py"))
  os.rename(os.path.join(root, "pkg_a", "m.py"), os.path.join(root, "pkg_a", "m2.py"))
  assert code_fingerprint(root, PACKAGES) != base


def test_fingerprint_ignores_caches_compiled_files_and_non_code(tmp_path):
  root = _tree(tmp_path)
  base = code_fingerprint(root, PACKAGES)
  _write(os.path.join(root, "pkg_a", "__pycache__", "m.cpython-313.pyc"), "compiled")
  _write(os.path.join(root, "pkg_a", "__pycache__", "stray.py"), "")
  _write(os.path.join(root, "pkg_b", "README.md"), "notes")
  _write(os.path.join(root, "other_package", "x.py"), "Z = 3\n")
  assert code_fingerprint(root, PACKAGES) == base


def test_a_missing_package_folder_is_an_error_naming_it(tmp_path):
  root = _tree(tmp_path)
  with pytest.raises(FileNotFoundError, match="pkg_c"):
    code_fingerprint(root, PACKAGES + ("pkg_c",))


def _pipeline(tmp_path, **kwargs):
  from tfx_pipeline.pipeline import create_pipeline  # pylint: disable=import-outside-toplevel
  trainer = TrainerSettings(visual=VisualConfig(variant="cscnn", backbone_weights=CATALOGUE))
  return create_pipeline(pipeline_name="t", pipeline_root=str(tmp_path / "root"),
                         data_root=str(tmp_path / "data"), serving_model_dir=str(tmp_path / "serving"),
                         trainer=trainer, input_layout="flat", enable_cache=True, **kwargs)


def _code_versions(pipeline):
  """{component id: the code_version it carries (None: none)}."""
  out = {}
  for c in pipeline.components:
    props = c.exec_properties
    if c.id in IN_CUSTOM_CONFIG:
      out[c.id] = json.loads(props["custom_config"]).get(CODE_VERSION_KEY)
    else:
      out[c.id] = props.get(CODE_VERSION_KEY)
  return out


def test_every_component_running_project_code_carries_the_code_version(tmp_path):
  versions = _code_versions(_pipeline(tmp_path, code_version="v-one"))
  ours = {cid for cid in versions if cid not in TFX_OWN}
  assert {"AnomaliesGate", "Transform", "BaselineGen", "AdCatalogGen", "CataloguePretrain",
          "VisualTrainer", "VisualEmbeddingGen", "Evaluator"} <= ours
  assert {cid: versions[cid] for cid in ours} == {cid: "v-one" for cid in ours}
  assert all(versions[cid] is None for cid in TFX_OWN & set(versions))
  other = _code_versions(_pipeline(tmp_path, code_version="v-two"))
  assert {cid for cid in versions if versions[cid] != other[cid]} == ours


def test_the_default_code_version_is_this_checkouts_fingerprint(tmp_path):
  from tfx_pipeline.pipeline import create_pipeline  # pylint: disable=import-outside-toplevel
  p = create_pipeline(pipeline_name="t", pipeline_root=str(tmp_path / "root"),
                      data_root=str(tmp_path / "data"), serving_model_dir=str(tmp_path / "serving"),
                      trainer=TrainerSettings(visual=VisualConfig(variant="none")), input_layout="flat")
  versions = _code_versions(p)
  assert versions["Trainer"] == versions["Transform"] == code_fingerprint(PROJECT_ROOT, CODE_PACKAGES)


def _run_catalogue_pipeline(tmp_path, code_version):
  """A one-component pipeline (AdCatalogGen on a two-ad catalogue) run by TFX's LocalDagRunner
  with the cache on; returns the names of AdCatalogGen's output folders so far (one per
  execution that ran; a cached execution adds none)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from tfx import v1 as tfx  # pylint: disable=import-outside-toplevel
  from components.ad_catalog import AdCatalogGen  # pylint: disable=import-outside-toplevel
  data = tmp_path / "data"
  if not data.exists():
    (data / "ads").mkdir(parents=True)
    for ad in ("a1", "a2"):
      Image.new("RGB", (12, 12), (200, 10, 10)).save(data / "ads" / f"{ad}.png")
    (data / "ads" / "ads.csv").write_text(
        "ad_id,category_id,brand_id,title_words,image\na1,1,b,t,ads/a1.png\na2,2,b,t,ads/a2.png\n")
  gen = AdCatalogGen(data_root=str(data), image_size=8, code_version=code_version)
  root = str(tmp_path / "root")
  tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
      pipeline_name="code_version_cache", pipeline_root=root, components=[gen], enable_cache=True,
      metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
          str(tmp_path / "metadata.sqlite"))))
  return sorted(os.listdir(os.path.join(root, "AdCatalogGen", "examples")))


@pytest.mark.slow  # three LocalDagRunner runs
def test_tfx_cache_reuses_an_output_for_the_same_code_and_reruns_for_changed_code(tmp_path):
  first = _run_catalogue_pipeline(tmp_path, "v-one")
  assert len(first) == 1
  assert _run_catalogue_pipeline(tmp_path, "v-one") == first          # cached: no new execution
  changed = _run_catalogue_pipeline(tmp_path, "v-two")
  assert len(changed) == 2 and set(first) < set(changed)              # re-run for the new code
