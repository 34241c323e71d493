#!/usr/bin/env bash
# System packages that some tests need: an aarch64 cross compiler with qemu (NEON kernels),
# Chromium (browser demo), an Arm bare-metal toolchain with qemu-system-arm (examples/mcu) and
# clang with wasi-libc (make -C runtime_c wasm) and libFuzzer (make -C runtime_c fuzz), an armhf
# cross compiler (make -C runtime_c test-arm32) and a de_DE locale (test_locale.c). Idempotent;
# installs only what is missing. Without root or sudo it says what is missing and leaves those
# tests to skip, except in CI, where missing is an error.
set -euo pipefail

need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
command -v chromium >/dev/null || need+=(chromium)
# Cortex-M firmware under QEMU (examples/mcu) and the WebAssembly build (make -C runtime_c wasm)
command -v arm-none-eabi-gcc >/dev/null || need+=(gcc-arm-none-eabi libnewlib-arm-none-eabi)
command -v qemu-system-arm >/dev/null || need+=(qemu-system-arm)
command -v clang >/dev/null || need+=(clang)
command -v wasm-ld >/dev/null || need+=(lld)
command -v llvm-ar >/dev/null || need+=(llvm)
[ -f /usr/lib/wasm32-wasi/libc.a ] || need+=(wasi-libc)
ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 || need+=(libclang-rt-dev-wasm32)
# runtime_c: libFuzzer (make fuzz), 32-bit ARM tests (make test-arm32), a ',' decimal locale (test_locale)
compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null || need+=(libclang-rt-dev)
command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
command -v qemu-arm >/dev/null || { [[ " ${need[*]} " == *" qemu-user "* ]] || need+=(qemu-user); }
command -v localedef >/dev/null || need+=(locales)
# llama.cpp from the pinned llama-cpp-python sdist (tests/test_gguf.py, tools/bench_peers.py)
command -v g++ >/dev/null || need+=(g++)
command -v cmake >/dev/null || need+=(cmake)
want_locale=0
locale -a 2>/dev/null | grep -qi '^de_DE\.utf-\?8$' || want_locale=1
[ ${#need[@]} -eq 0 ] && [ $want_locale -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo -n"; else sudo=none; fi
if [ "$sudo" = none ]; then
    echo "setup: missing ${need[*]} and no root to install them; their tests will skip" >&2
    [ "${CI:-}" = true ] && exit 1 || exit 0
fi
echo "setup: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if [ ${#need[@]} -gt 0 ]; then
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ $want_locale -eq 1 ] && $sudo localedef -i de_DE -f UTF-8 de_DE.UTF-8
exit 0
