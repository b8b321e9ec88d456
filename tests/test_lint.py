"""The code passes the linter configured in pyproject.toml ([tool.ruff]: pyflakes, the pycodestyle
errors, lines up to 120 characters); `make lint` runs the same check."""

import subprocess
import sys

from conftest import ROOT


def test_ruff_check_passes():
  proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert "No module named ruff" not in proc.stderr, "ruff is pinned in requirements.lock: run `make setup`"
  assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
