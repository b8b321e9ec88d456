"""The fingerprint of the code that runs inside the pipeline's components, for TFX's cache.

TFX reuses a cached execution when the component, its parameters and its input artifacts are
the same; of the code it hashes only a ``module_file``'s content. This pipeline names its code
by import path instead (``preprocessing_fn="tfx_pipeline.preprocessing.preprocessing_fn"``,
``run_fn=...``, the project's own components), so an edit of that code, or another checkout or
version of the project, would otherwise reuse outputs that the old code made under
``pipeline run --cache``. `create_pipeline` therefore gives every component that runs this
project's code the fingerprint as a parameter (in ``custom_config`` for Transform and the
Trainer): a changed fingerprint re-runs them, and TFX's own components that only read the data
(ExampleGen, StatisticsGen, ...) stay cached.
"""

from __future__ import annotations

import hashlib
import os
from typing import Sequence

CODE_VERSION_KEY = "code_version"
CODE_PACKAGES = ("spec", "models", "tfx_pipeline", "components")
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def code_fingerprint(root: str = PROJECT_ROOT, packages: Sequence[str] = CODE_PACKAGES) -> str:
  """SHA-256 (first 16 hex digits) over the relative path and the bytes of every ``*.py`` file
  in `packages` under `root`; compiled files, caches and non-code files do not count."""
  h = hashlib.sha256()
  for package in packages:
    top = os.path.join(root, package)
    if not os.path.isdir(top):
      raise FileNotFoundError(f"code fingerprint: package folder {top} not found")
    paths = []
    for folder, dirs, files in os.walk(top):
      dirs[:] = [d for d in dirs if d != "__pycache__"]
      paths += [os.path.join(folder, f) for f in files if f.endswith(".py")]
    for path in sorted(paths):
      h.update(os.path.relpath(path, root).replace(os.sep, "/").encode() + b"\0")
      with open(path, "rb") as f:
        h.update(f.read() + b"\0")
  return h.hexdigest()[:16]
