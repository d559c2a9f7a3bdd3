import { NOT_IN_SYSCALL, USER_REGS, type CpuState, type RegName, type SystemRegName, type VcpuState } from './cpu';
import type { RandomAccess } from '../io/source';
import { hex } from './integers';

/**
 * ESXi guest dumps (`debug.guest`, beside `debug.vmem`): what ESXi writes for a guest that
 * panics (monitor.mini-suspend_on_panic), as crash's vmware_guestdump.c reads them. There is no
 * magic: a file is one only when its name ends in `.guest` and every check below holds.
 *
 * Layout, all little-endian, packed:
 *   u32 version, u32 vCPU count
 *   a reserved gap: 13 bytes (version 1), 14 (3, 4, 5), 15 (6), 8 (7)
 *   main memory: u64 last address, memory size in pages, u32 reserved, u32 hole count (≤ 2),
 *     two holes {first page, pages}. Version 1 has a u32 page count and u32 hole fields, then
 *     8 bytes per hole and 4 more before the vCPUs; versions 3+ u64 throughout.
 *   version 7 only: 11 more bytes, the first 4 the CPU architecture (1 x86, 0 AArch64)
 *   per vCPU: u32 CR0, u64 CR2, CR3, CR4, 10 reserved u64, u64 IDT base (116 bytes); a reserved
 *     gap (45 bytes before version 4, 42 from it); Linux's x86-64 pt_regs (27 × u64, the order of
 *     user_regs_struct) and 17 reserved bytes (233); then 4096 reserved bytes.
 * Checks: last address + 1 = (memory pages + hole pages) × 4096, and the file size is exactly the
 * header plus the vCPU records. debug.vmem holds the memory with the holes left out: an address
 * above a hole is stored that many pages lower.
 */

export const GUEST_EXT = /\.guest$/i;
const PAGE = 4096;
const HEAD = 8;
const MEMINFO = 56;
const MEMINFO_V1 = 36;
const VCPU1 = 116;
const VCPU2 = 233;
const VCPU_RESERVED = PAGE;
const ARCH_X86 = 1;
const ARCH_AARCH64 = 0;
const MAX_HOLES = 2;
/** ESXi's largest VMs have 768 vCPUs; a count far beyond that is a damaged or foreign file. */
export const MAX_GUEST_VCPUS = 4096;

/** The reserved gap after the 8-byte head, per version; versions not listed are not described. */
const GAP: ReadonlyMap<number, number> = new Map([[1, 13], [3, 14], [4, 14], [5, 14], [6, 15], [7, 8]]);
/** The ESXi release each version came with, as crash names them. */
export const RELEASE: ReadonlyMap<number, string> = new Map([[1, 'ESXi 6.7 and older'], [3, 'ESXi 6.8'], [4, 'ESXi 7.0'], [5, 'ESXi 8.0'], [6, 'ESXi 8.0u2'], [7, 'ESXi 9.0']]);

export interface Hole {
  /** First guest-physical page of the hole. */
  ppn: number;
  pages: number;
}

export interface GuestDump {
  file: string;
  fileSize: number;
  version: number;
  arch: 'x86_64' | 'aarch64';
  vcpuCount: number;
  lastAddr: number;
  memoryPages: number;
  holes: Hole[];
  /** File offset of the first vCPU record. */
  vcpusOffset: number;
  vcpuSize: number;
  /** The gap inside each vCPU record before pt_regs. */
  vcpuGap: number;
}

/** Why a file is not a guest dump; the caller folds it into its one-line "not a checkpoint" error. */
export class NotGuestDump extends Error {}

function u64(b: Buffer, at: number): number {
  const v = b.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new NotGuestDump(`a size field at ${hex(at)} is beyond 2^53`);
  return Number(v);
}

/** Read and check the header. Throws NotGuestDump naming the first check that fails. */
export function readGuestDump(src: RandomAccess): GuestDump {
  const head = Buffer.alloc(HEAD);
  if (src.readAtSync(head, 0) < HEAD) throw new NotGuestDump(`only ${src.size} bytes`);
  const version = head.readUInt32LE(0);
  const vcpuCount = head.readUInt32LE(4);
  const gap = GAP.get(version);
  if (gap === undefined) throw new NotGuestDump(`header version ${version} is none of 1, 3, 4, 5, 6, 7`);
  if (vcpuCount > MAX_GUEST_VCPUS) throw new NotGuestDump(`absurd vCPU count ${vcpuCount} (more than ${MAX_GUEST_VCPUS})`);
  const at = HEAD + gap;
  const size = version === 1 ? MEMINFO_V1 : MEMINFO + (version === 7 ? 11 : 0);
  const mm = Buffer.alloc(size);
  if (src.readAtSync(mm, at) < size) throw new NotGuestDump(`the header is cut short (${src.size} bytes)`);

  const lastAddr = u64(mm, 0);
  let memoryPages: number;
  let holeCount: number;
  const holes: Hole[] = [];
  let vcpusOffset: number;
  if (version === 1) {
    memoryPages = mm.readUInt32LE(8);
    holeCount = mm.readUInt32LE(16);
    if (holeCount > MAX_HOLES) throw new NotGuestDump(`${holeCount} memory holes (at most ${MAX_HOLES})`);
    for (let i = 0; i < holeCount; i++) holes.push({ ppn: mm.readUInt32LE(20 + 8 * i), pages: mm.readUInt32LE(24 + 8 * i) });
    vcpusOffset = at + MEMINFO_V1 + 8 * holeCount + 4;
  } else {
    memoryPages = u64(mm, 8);
    holeCount = mm.readUInt32LE(20);
    if (holeCount > MAX_HOLES) throw new NotGuestDump(`${holeCount} memory holes (at most ${MAX_HOLES})`);
    for (let i = 0; i < holeCount; i++) holes.push({ ppn: u64(mm, 24 + 16 * i), pages: u64(mm, 32 + 16 * i) });
    vcpusOffset = at + size;
  }
  let arch: GuestDump['arch'] = 'x86_64';
  if (version === 7) {
    const code = mm.readUInt32LE(MEMINFO);
    if (code !== ARCH_X86 && code !== ARCH_AARCH64) throw new NotGuestDump(`CPU architecture ${code} is neither 1 (x86) nor 0 (AArch64)`);
    arch = code === ARCH_X86 ? 'x86_64' : 'aarch64';
  }

  const holePages = holes.reduce((n, h) => n + h.pages, 0);
  // BigInt: the product may pass 2^53 on a damaged file, and the check must still be exact.
  if (BigInt(lastAddr) + 1n !== (BigInt(memoryPages) + BigInt(holePages)) * BigInt(PAGE)) {
    throw new NotGuestDump(`last address ${hex(lastAddr)} + 1 is not (${memoryPages} memory pages + ${holePages} hole pages) × 4096`);
  }
  const vcpuGap = version < 4 ? 45 : 42;
  const vcpuSize = VCPU1 + vcpuGap + VCPU2 + VCPU_RESERVED;
  const expected = vcpusOffset + vcpuCount * vcpuSize;
  if (src.size !== expected) {
    throw new NotGuestDump(`${src.size} bytes, where ${vcpuCount} vCPUs after a version ${version} header make ${expected}`);
  }
  // Holes in address order, apart, inside memory: otherwise no address can be placed.
  let prevEnd = 0;
  for (const h of holes) {
    if (h.pages === 0 || h.ppn < prevEnd || (h.ppn + h.pages) * PAGE > lastAddr + 1) {
      throw new NotGuestDump(`memory hole at page ${h.ppn} (${h.pages} pages) is empty, out of order or past the last address`);
    }
    prevEnd = h.ppn + h.pages;
  }
  return { file: src.name, fileSize: src.size, version, arch, vcpuCount, lastAddr, memoryPages, holes, vcpusOffset, vcpuSize, vcpuGap };
}

/** Guest-physical runs into debug.vmem: the stretches between holes, each stored that many pages lower. */
export function guestRuns(g: GuestDump): { start: number; length: number; fileOffset: number }[] {
  const runs: { start: number; length: number; fileOffset: number }[] = [];
  const endPage = (g.lastAddr + 1) / PAGE;
  let page = 0;
  let skipped = 0;
  for (const h of [...g.holes, { ppn: endPage, pages: 0 }]) {
    if (h.ppn > page) runs.push({ start: page * PAGE, length: (h.ppn - page) * PAGE, fileOffset: (page - skipped) * PAGE });
    skipped += h.pages;
    page = h.ppn + h.pages;
  }
  return runs;
}

/** pt_regs order: Linux's user_regs_struct, the same 27 registers. */
const PT_REGS: readonly RegName[] = USER_REGS;

/** Each vCPU's registers, read from its record (x86 dumps only). */
export function guestCpuState(g: GuestDump, src: RandomAccess): CpuState {
  const source = 'the guest dump';
  if (g.arch === 'aarch64') {
    return {
      arch: 'aarch64', vcpus: [], source,
      notes: ['physmem.elf: an AArch64 guest dump: an EM_AARCH64 core without CPU state (how AArch64 vCPU records are laid out is not described publicly)'],
    };
  }
  const vcpus: VcpuState[] = [];
  const rec = Buffer.alloc(VCPU1 + g.vcpuGap + VCPU2);
  for (let c = 0; c < g.vcpuCount; c++) {
    const missing: string[] = [];
    const regs = new Map<RegName, bigint>();
    const system = new Map<SystemRegName, bigint>();
    if (src.readAtSync(rec, g.vcpusOffset + c * g.vcpuSize) < rec.length) {
      missing.push(`vCPU record ${c}`);
      regs.set('orig_rax', NOT_IN_SYSCALL);
    } else {
      system.set('cr0', BigInt(rec.readUInt32LE(0)));
      system.set('cr2', rec.readBigUInt64LE(4));
      system.set('cr3', rec.readBigUInt64LE(12));
      system.set('cr4', rec.readBigUInt64LE(20));
      system.set('idtr_base', rec.readBigUInt64LE(VCPU1 - 8));
      const at = VCPU1 + g.vcpuGap;
      PT_REGS.forEach((name, i) => regs.set(name, rec.readBigUInt64LE(at + 8 * i)));
    }
    vcpus.push({ index: c, regs, system, missing });
  }
  return { arch: 'x86_64', vcpus, notes: [], source };
}
