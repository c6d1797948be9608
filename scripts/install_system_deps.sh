#!/usr/bin/env bash
# Debian packages edgegen's GPU paths execute on without a GPU: PoCL (OpenCL on the CPU)
# and Mesa's lavapipe (Vulkan on the CPU, for wgpu), plus a C compiler to link libraries; for the
# native C runtime: OpenCL headers, the aarch64 cross compiler and qemu to run its binaries, libsodium
# (signature checks), an ssh server and adb (the ssh:// and adb:// bench tests); chromium (WebGPU on
# SwiftShader, the browser runtime's test) and node (its host-side code checked against numpy).
# Installs only what is missing, and only as root; otherwise says what to install.
set -euo pipefail
pkgs=(pocl-opencl-icd ocl-icd-libopencl1 mesa-vulkan-drivers libvulkan1 gcc make
      opencl-headers ocl-icd-opencl-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
      openssh-server adb libsodium23 chromium nodejs)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "edgegen: missing system packages (${missing[*]}); install them with: sudo apt-get install ${missing[*]}" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
