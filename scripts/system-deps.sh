#!/usr/bin/env bash
# The Debian packages the build and the suite need, asked of apt only when something is missing.
#
#   scripts/system-deps.sh            install what is missing (apt-get, as root or through sudo)
#   scripts/system-deps.sh --print    print what would be installed, one package a line; install nothing
#                                     (libfuse2 is installed as libfuse2t64 where the archive has that)
#
# FUSE: libfuse.so.2 (fuse-native links it) and a fusermount to mount as a user and to unmount.
# Debian 12+ and Ubuntu 22.04+ ship fuse3, whose fusermount3 comes with a `fusermount` link and
# which declares `Breaks: fuse`: asking for `fuse` there would make apt remove fuse3 and what
# depends on it (sshfs, gvfs-fuse). So a fusermount of either name is enough and neither package
# is asked for; with none at all, fuse3 is. libfuse2 works with fuse3's fusermount. apt-get runs
# with --no-remove: should a package still want to remove another, nothing is installed.
set -euo pipefail

print_only=false
[ "${1:-}" = --print ] && print_only=true

have() { command -v "$1" >/dev/null 2>&1; }

missing=()
want() { # want PACKAGE: add it once
  local p
  for p in "${missing[@]}"; do [ "$p" = "$1" ] && return; done
  missing+=("$1")
}

# The loader's cache, as ldconfig prints it (ldconfig is in /sbin, off a user's PATH on some systems).
ldcache=$( (ldconfig -p || /sbin/ldconfig -p) 2>/dev/null || true)
[[ "$ldcache" == *"libfuse.so.2 "* ]] || want libfuse2

if ! have fusermount && ! have fusermount3; then
  want fuse3
elif ! have fusermount; then
  # libfuse2 runs `fusermount` to mount as a user that is not root; root mounts without it.
  echo "note: only fusermount3 is here; mounting as a user that is not root needs a \`fusermount\`" \
    "(e.g. ln -s \"$(command -v fusermount3)\" /usr/local/bin/fusermount)" >&2
fi

# The tools nobody here wrote that the suite checks the mount with, and what the tests that put
# evidence on a stalling loop device, mount in a namespace of their own and read as another user run.
for pair in strings:binutils readelf:binutils yara:yara getfattr:attr gdb:gdb mkfs.ext4:e2fsprogs \
  losetup:mount mount:mount setpriv:util-linux unshare:util-linux; do
  have "${pair%%:*}" || want "${pair#*:}"
done

# The web server the HTTP tests and benchmark read evidence from (started by them on a loopback
# port, never as a service), curl (the benchmark's reference) and openssl (a test certificate).
have nginx || want nginx-light
for pair in curl:curl openssl:openssl; do
  have "${pair%%:*}" || want "${pair#*:}"
done

if $print_only; then
  [ ${#missing[@]} -eq 0 ] || printf '%s\n' "${missing[@]}"
  exit 0
fi
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=
[ "$(id -u)" = 0 ] || sudo=sudo
echo "installing Debian's ${missing[*]}"
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# Debian 13 and Ubuntu 24.04 renamed the library libfuse2t64 (the 64-bit time_t transition);
# `libfuse2` is only a name it provides there, so the package itself is asked for by name.
packages=()
for p in "${missing[@]}"; do
  if [ "$p" = libfuse2 ] && [[ "$(apt-cache policy libfuse2t64 2>/dev/null || true)" =~ Candidate:\ [0-9] ]]; then p=libfuse2t64; fi
  packages+=("$p")
done
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-remove "${packages[@]}" >/dev/null
