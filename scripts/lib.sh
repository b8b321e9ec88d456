# Shared helpers for scripts/setup.sh and bin/env. Sourced, not executed.
# One place decides where the environment lives and how to enter it.

CSCNN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CSCNN_ROOTFS="${CSCNN_ROOTFS:-$CSCNN_ROOT/.rootfs}"   # Debian 13 chroot (hosts with glibc < 2.39)
CSCNN_VENV_HOST="$CSCNN_ROOT/.venv"                     # plain venv (hosts with glibc >= 2.39)
CSCNN_VENV_CHROOT="/opt/venv"                           # venv inside the chroot
CSCNN_MIN_GLIBC="2.39"
# EfficientNet-Lite0's ImageNet weights, converted by setup.sh, relative to the venv (the path
# models/efficientnet_lite.py:imagenet_weights_path() gives inside the environment).
CSCNN_IMAGENET_WEIGHTS_REL="share/cscnn/efficientnet_lite0_imagenet.weights.h5"

cscnn_log() { printf '[cscnn setup] %s\n' "$*" >&2; }

# Prints "venv" when the host can run the TFX 1.21 wheels directly, else "chroot".
cscnn_mode() {
  if [ -n "${CSCNN_ENV_MODE:-}" ]; then echo "$CSCNN_ENV_MODE"; return; fi
  local v
  v="$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')"
  if [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$CSCNN_MIN_GLIBC" "$v" | sort -V | head -1)" = "$CSCNN_MIN_GLIBC" ]; then
    echo venv
  else
    echo chroot
  fi
}

# Runs "$@" inside the Debian 13 root filesystem, in a private mount namespace so that
# nothing stays mounted afterwards (scripts/enter_chroot.sh does the mounts). The repo's
# parent folder (the repo and ../shared beside it) and /tmp are visible inside at the same
# paths; the current directory is kept; CSCNN_*, TF_* and PYTEST_* variables pass through.
cscnn_chroot_exec() {
  local share envs=() kv
  share="$(dirname "$CSCNN_ROOT")"
  [ "$share" = "/" ] && share="$CSCNN_ROOT"
  envs=(HOME=/root LANG=C.UTF-8 "TERM=${TERM:-dumb}" "CI=${CI:-}"
        "PATH=$CSCNN_VENV_CHROOT/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        "VIRTUAL_ENV=$CSCNN_VENV_CHROOT" PIP_CERT=/etc/ssl/certs/ca-certificates.crt
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 "PYTHONPATH=$CSCNN_ROOT"
        "TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}" CSCNN_IN_ENV=1)
  while IFS= read -r -d '' kv; do
    case "$kv" in
      CSCNN_IN_ENV=*|TF_CPP_MIN_LOG_LEVEL=*) ;;
      CSCNN_*|TF_*|PYTEST_*|COLUMNS=*) envs+=("$kv") ;;
    esac
  done < <(env -0)
  exec unshare --mount --propagation private -- /bin/bash "$CSCNN_ROOT/scripts/enter_chroot.sh" \
    "$CSCNN_ROOTFS" "$share" "$(pwd)" "${#envs[@]}" "${envs[@]}" "$@"
}
