#!/bin/bash
# Entered by cscnn_chroot_exec (scripts/lib.sh) inside a private mount namespace:
#   enter_chroot.sh ROOTFS SHARE CWD N ENV1..ENVN CMD [ARGS...]
set -e
rootfs=$1 share=$2 cwd=$3 n=$4
shift 4
envs=("${@:1:$n}")
shift "$n"
mount -t proc proc "$rootfs/proc"
mount --rbind /sys "$rootfs/sys"
mount --rbind /dev "$rootfs/dev"
mkdir -p "$rootfs$share" "$rootfs/tmp"
mount --bind "$share" "$rootfs$share"
mount --bind /tmp "$rootfs/tmp"
cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf" 2>/dev/null || true
exec chroot "$rootfs" /usr/bin/env -i "${envs[@]}" /bin/bash -c 'cd "$0" && exec "$@"' "$cwd" "$@"
