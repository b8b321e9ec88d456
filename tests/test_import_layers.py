"""The packages' import graph points down only (README, Architecture):

    spec  <-  models  <-  tfx_pipeline code loaded by TFX  <-  components
          <-  pipeline / runners  <-  the cscnn CLI and tools
    serving and cscnn.data depend on spec only.

Every import counts, also one inside a function.
"""

from __future__ import annotations

import ast
import os
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("spec", "models", "tfx_pipeline", "components", "serving", "cscnn")
RUNNERS = ("tfx_pipeline.pipeline", "tfx_pipeline.local_runner", "tfx_pipeline.kubeflow_v2_runner",
           "tfx_pipeline.airflow", "tfx_pipeline.summary")
SPEC_ONLY = ("serving", "cscnn.data")   # besides themselves, they may import spec only


def _within(module: str, prefix: str) -> bool:
  return module == prefix or module.startswith(prefix + ".")


def layer(module: str) -> Optional[int]:
  """0 spec, 1 models, 2 tfx_pipeline code loaded by TFX, 3 components, 4 pipeline and runners,
  5 the CLI and tools; None for modules outside the project."""
  if _within(module, "spec"):
    return 0
  if _within(module, "models") or any(_within(module, p) for p in SPEC_ONLY):
    return 1
  if any(_within(module, r) for r in RUNNERS):
    return 4
  if _within(module, "tfx_pipeline"):
    return 2
  if _within(module, "components"):
    return 3
  if _within(module, "cscnn"):
    return 5
  return None


def _imports(path: str, module: str) -> List[Tuple[int, str]]:
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [(node.lineno, a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      if node.level:   # relative: resolve against the importing module's package
        base = module.split(".")[:-node.level] if not path.endswith("__init__.py") else \
            module.split(".")[:len(module.split(".")) - node.level + 1]
        name = ".".join(base + ([node.module] if node.module else []))
      else:
        name = node.module or ""
      out.append((node.lineno, name))
  return out


def violations(root: str) -> List[str]:
  """Every import in the packages under `root` that points up a layer, or out of a spec-only
  package to anything but spec, as ``file:line: a -> b``."""
  found = []
  for package in PACKAGES:
    for dirpath, _, files in os.walk(os.path.join(root, package)):
      for name in sorted(files):
        if not name.endswith(".py"):
          continue
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
        module = rel[:-len(".__init__")] if rel.endswith(".__init__") else rel
        for line, target in _imports(path, module):
          mine, theirs = layer(module), layer(target)
          if theirs is None:
            continue
          spec_only = next((p for p in SPEC_ONLY if _within(module, p)), None)
          if spec_only is not None:
            bad = not (_within(target, "spec") or _within(target, spec_only))
          else:
            bad = theirs > mine or (any(_within(target, p) for p in SPEC_ONLY) and mine < 4
                                    and not _within(target, "cscnn.data"))
          if bad:
            found.append(f"{os.path.relpath(path, root)}:{line}: {module} -> {target}")
  return found


def test_no_import_points_up():
  assert violations(ROOT) == []


def _tree(tmp_path, files: Dict[str, str]) -> str:
  for rel, text in files.items():
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  return str(tmp_path)


def test_the_check_finds_an_upward_import(tmp_path):
  root = _tree(tmp_path, {
      "spec/__init__.py": "",
      "spec/features.py": "import os\n\ndef f():\n  from models.dcn import DCNConfig\n",
      "models/__init__.py": "",
      "models/dcn.py": "from spec.features import f\n",
      "tfx_pipeline/__init__.py": "",
      "tfx_pipeline/trainer.py": "from components import ad_catalog\n",
      "components/__init__.py": "",
      "components/ad_catalog.py": "from tfx_pipeline import trainer\n",
      "serving/__init__.py": "",
      "serving/server.py": "from . import client\nfrom models.dcn import OUTPUT_KEY\nfrom spec import names\n",
      "serving/client.py": "",
  })
  assert violations(root) == [
      "spec/features.py:4: spec.features -> models.dcn",
      "tfx_pipeline/trainer.py:1: tfx_pipeline.trainer -> components",
      "serving/server.py:2: serving.server -> models.dcn",
  ]


def test_layers_of_the_real_modules():
  assert [layer(m) for m in ("spec.features", "models.dcn", "tfx_pipeline.trainer", "components.ad_catalog",
                             "tfx_pipeline.pipeline", "cscnn.cli", "serving.server", "cscnn.data.sample",
                             "numpy")] == [0, 1, 2, 3, 4, 5, 1, 1, None]
