"""Config dataclasses built from plain dicts (TFX custom_config, JSON) that refuse unknown keys."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping


def known_fields(cls, d: Mapping[str, Any], what: str) -> Dict[str, Any]:
  """`d` as a dict, after checking that every key is a field of dataclass `cls` (a misspelt
  setting fails instead of being ignored); `what` names the settings in the error."""
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = set(d) - known
  if unknown:
    raise ValueError(f"unknown {what} {sorted(unknown)}; known: {sorted(known)}")
  return dict(d)
