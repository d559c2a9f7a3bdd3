#!/usr/bin/env bash
# make demo: mount the bundled sample, show what an analyst sees, unmount (even on failure).
set -euo pipefail
cd "$(dirname "$0")/.."
sample=fixtures/sample.vmss
mnt=$(mktemp -d /tmp/vmssfs-demo.XXXXXX)
cleanup() {
  fusermount -u "$mnt" 2>/dev/null || fusermount -uz "$mnt" 2>/dev/null || true
  rmdir "$mnt" 2>/dev/null || true
}
trap cleanup EXIT
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step "vmssfs $sample $mnt"
bin/vmssfs "$sample" "$mnt"
step "mount | grep $mnt"
mount | grep -F "$mnt"
step "ls -l $mnt"
ls -l "$mnt"
step "ls $mnt/groups"
ls "$mnt/groups"
step "ls $mnt/groups/cpu | head"
ls "$mnt/groups/cpu" | head
step "head -n 12 $mnt/info.txt"
head -n 12 "$mnt/info.txt"
for tag in 'cpu/cpu:numVCPUs' 'cpu/rip[0]' 'cpu/CR64[0][3]' 'Checkpoint/memSize' 'memory/regionPPN[1]'; do
  step "cat '$mnt/groups/$tag'"
  cat "$mnt/groups/$tag"
done
step "head -n 4 $mnt/config.vmx"
head -n 4 "$mnt/config.vmx"
step "file $mnt/screenshot.png  (its first bytes)"
od -A d -c -N 8 "$mnt/screenshot.png" | head -1
step "od -A x -t x1z -N 32 $mnt/physmem.raw"
od -A x -t x1z -N 32 "$mnt/physmem.raw"
step "dd if=$mnt/physmem.raw bs=4096 skip=\$((0x100000)) count=1 | head -c 28   # the page at guest-physical 4 GiB"
dd if="$mnt/physmem.raw" bs=4096 skip=$((0x100000)) count=1 status=none | head -c 28; echo
step "fusermount -u $mnt"
fusermount -u "$mnt"
sleep 0.5
grep -qF " $mnt " /proc/mounts && { echo "still mounted!"; exit 1; }
echo "unmounted; the daemon has exited"
