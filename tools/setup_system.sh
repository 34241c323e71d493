#!/usr/bin/env bash
# System packages that some tests need: an aarch64 cross compiler with qemu (NEON kernels) and
# Chromium (browser demo). Idempotent; installs only what is missing. Without root or sudo it
# says what is missing and leaves those tests to skip, except in CI, where missing is an error.
set -euo pipefail

need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
command -v chromium >/dev/null || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo -n"; else sudo=none; fi
if [ "$sudo" = none ]; then
    echo "setup: missing ${need[*]} and no root to install them; their tests will skip" >&2
    [ "${CI:-}" = true ] && exit 1 || exit 0
fi
echo "setup: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
