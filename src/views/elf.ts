import { findGroup, findTag, indexTags, tagUint, type Group } from '../format/checkpoint';
import { tagLabel, type Tag } from '../format/tags';
import type { Snapshot } from '../snapshot';
import type { Extent } from '../tree/nodes';
import type { View } from './lime';

// ELF64 constants (System V gABI; the x86-64 and AArch64 psABIs for the machine numbers).
const EHDR_SIZE = 64;
const PHDR_SIZE = 56;
const SHDR_SIZE = 64;
const ET_CORE = 4;
export const EM_X86_64 = 62;
export const EM_AARCH64 = 183;
const PT_LOAD = 1;
const PT_NOTE = 4;
const PF_X = 1;
const PF_W = 2;
const PF_R = 4;
/** e_phnum's escape: the real count is in section header 0's sh_info (gABI "extended numbering"). */
const PN_XNUM = 0xffff;
const PAGE = 4096;

// A note is namesz, descsz, type (u32 each), the name NUL-terminated and padded to 4, the desc padded to 4.
const NT_PRSTATUS = 1;
const NOTE_NAME = Buffer.from('CORE\0');
const NOTE_NAME_PADDED = 8;

/**
 * Linux's struct elf_prstatus on x86_64 (include/uapi/linux/elfcore.h + asm/user_64.h):
 *   0 elf_siginfo pr_info (3 × i32), 12 i16 pr_cursig, 16 u64 pr_sigpend, 24 u64 pr_sighold,
 *   32 i32 pr_pid, 36 pr_ppid, 40 pr_pgrp, 44 pr_sid, 48 four struct timeval (4 × 16),
 *   112 pr_reg = struct user_regs_struct (27 × u64), 328 i32 pr_fpvalid, padded to 336.
 */
export const PRSTATUS_SIZE = 336;
const PR_PID = 32;
const PR_REG = 112;
/** user_regs_struct, in order. */
export const USER_REGS = [
  'r15', 'r14', 'r13', 'r12', 'rbp', 'rbx', 'r11', 'r10', 'r9', 'r8', 'rax', 'rcx', 'rdx', 'rsi', 'rdi',
  'orig_rax', 'rip', 'cs', 'eflags', 'rsp', 'ss', 'fs_base', 'gs_base', 'ds', 'es', 'fs', 'gs',
] as const;
type RegName = (typeof USER_REGS)[number];

/** cpu/gpregs[c]: 16 × u64 in x86 encoding order (FORMAT.md). */
const GPREGS: readonly RegName[] = ['rax', 'rcx', 'rdx', 'rbx', 'rsp', 'rbp', 'rsi', 'rdi', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15'];
/** cpu/S[c][seg] and S.base64[c][seg]: segment index order es cs ss ds fs gs. */
const SEGMENTS: readonly RegName[] = ['es', 'cs', 'ss', 'ds', 'fs', 'gs'];
const FS = 4;
const GS = 5;

/** Checkpoint/Platform value seen for Fusion on Apple silicon (ARM64 guests). */
const PLATFORM_ARM64 = 3;

/** An inline 1/2/4/8-byte value as u64 (tagUint stops at 2^53; kernel addresses do not). */
function inlineU64(tag: Tag | undefined): bigint | undefined {
  const b = tag?.inline;
  if (!b) return undefined;
  switch (b.length) {
    case 1: return BigInt(b.readUInt8(0));
    case 2: return BigInt(b.readUInt16LE(0));
    case 4: return BigInt(b.readUInt32LE(0));
    case 8: return b.readBigUInt64LE(0);
    default: return undefined;
  }
}

/**
 * The vCPUs to describe: 0..cpu:numVCPUs-1 when every one of them has a rip[c]; otherwise (the
 * count missing or damaged) exactly the indices c that have a rip[c] tag. Never more vCPUs than
 * the cpu group holds rip tags, whatever a damaged count or index claims.
 */
function vcpuIndices(cpu: Group | undefined, byLabel: ReadonlyMap<string, Tag>, notes: string[]): number[] {
  if (!cpu) return [];
  const present = [...new Set(cpu.tags.filter((t) => t.name === 'rip' && t.indices.length === 1).map((t) => t.indices[0] as number))].sort((a, b) => a - b);
  const declared = tagUint(byLabel.get('cpu:numVCPUs'));
  if (declared !== undefined && declared <= present.length && present.slice(0, declared).every((c, i) => c === i)) {
    return present.slice(0, declared);
  }
  notes.push(`physmem.elf: cpu/cpu:numVCPUs is ${declared === undefined ? 'missing' : `implausible (${declared})`}; took the ${present.length} vCPUs that have a cpu/rip[c] tag`);
  return present;
}

/** vCPU c's registers from the cpu group; `missing` gets the tags that were absent or unreadable. */
function registers(snap: Snapshot, byLabel: ReadonlyMap<string, Tag>, c: number, missing: string[]): Map<RegName, bigint> {
  const find = (name: string, indices: number[]): Tag | undefined => byLabel.get(tagLabel({ name, indices }));
  const regs = new Map<RegName, bigint>();
  // Not in a system call: what Linux stores in orig_rax outside one, so gdb never tries a syscall restart.
  regs.set('orig_rax', 0xffffffffffffffffn);
  const one = (name: RegName, tagName: string, indices: number[]): void => {
    const v = inlineU64(find(tagName, indices));
    if (v === undefined) missing.push(`${tagName}${indices.map((i) => `[${i}]`).join('')}`);
    else regs.set(name, v);
  };
  one('rip', 'rip', [c]);
  one('eflags', 'eflags', [c]);
  SEGMENTS.forEach((seg, k) => one(seg, 'S', [c, k]));
  one('fs_base', 'S.base64', [c, FS]);
  one('gs_base', 'S.base64', [c, GS]);

  const gp = find('gpregs', [c]);
  const want = GPREGS.length * 8;
  if (!gp?.block || gp.compressed || gp.size < want) {
    missing.push(`gpregs[${c}]`);
  } else {
    // 128 bytes of metadata, read once at build time like every other header byte of the view.
    const buf = Buffer.alloc(want);
    snap.metaFile.readAtSync(buf, gp.dataOffset);
    GPREGS.forEach((name, i) => regs.set(name, buf.readBigUInt64LE(8 * i)));
  }
  return regs;
}

function prstatus(c: number, regs: Map<RegName, bigint>): Buffer {
  const d = Buffer.alloc(PRSTATUS_SIZE);
  // gdb makes one thread per NT_PRSTATUS, named after pr_pid; 0 would mean "no thread".
  // pr_pid is an i32: a vCPU index from a damaged file (up to 2^32-1) is folded into range.
  d.writeInt32LE(((c + 1) % 0x7fffffff) || 1, PR_PID);
  USER_REGS.forEach((name, i) => d.writeBigUInt64LE(regs.get(name) ?? 0n, PR_REG + 8 * i));
  return d;
}

function note(type: number, desc: Buffer): Buffer {
  const n = Buffer.alloc(12 + NOTE_NAME_PADDED + align(desc.length, 4));
  n.writeUInt32LE(NOTE_NAME.length, 0);
  n.writeUInt32LE(desc.length, 4);
  n.writeUInt32LE(type, 8);
  NOTE_NAME.copy(n, 12);
  desc.copy(n, 12 + NOTE_NAME_PADDED);
  return n;
}

function align(v: number, to: number): number {
  return Math.ceil(v / to) * to;
}

interface Phdr { type: number; flags: number; offset: number; vaddr: number; paddr: number; filesz: number; memsz: number; align: number }

function writePhdr(b: Buffer, at: number, p: Phdr): void {
  b.writeUInt32LE(p.type, at);
  b.writeUInt32LE(p.flags, at + 4);
  b.writeBigUInt64LE(BigInt(p.offset), at + 8);
  b.writeBigUInt64LE(BigInt(p.vaddr), at + 16);
  b.writeBigUInt64LE(BigInt(p.paddr), at + 24);
  b.writeBigUInt64LE(BigInt(p.filesz), at + 32);
  b.writeBigUInt64LE(BigInt(p.memsz), at + 40);
  b.writeBigUInt64LE(BigInt(p.align), at + 48);
}

/**
 * /physmem.elf, an ELF64 core in the shape of Linux /proc/vmcore and QEMU's dump-guest-memory:
 * ELF header, program headers, one PT_NOTE holding an NT_PRSTATUS per vCPU, then one PT_LOAD per
 * run at a page-aligned file offset. p_paddr is the guest-physical address; p_vaddr is the same
 * value, so gdb (which reads by p_vaddr) shows guest-physical memory at its own addresses and
 * tools that map by p_paddr (Volatility, crash) are unaffected. The headers are built here, once;
 * run bytes are read lazily from the memory file.
 *
 * ARM64 guests (Checkpoint/Platform 3) get EM_AARCH64 and no PT_NOTE: where a checkpoint keeps
 * ARM registers is not known, and an AArch64 prstatus full of zeros would only mislead.
 */
export function elfView(snap: Snapshot): View | null {
  const pm = snap.physmem;
  if (!pm) return null;
  const cp = snap.checkpoint;
  const notes: string[] = [];
  const arm64 = tagUint(findTag(cp, 'Checkpoint', 'Platform')) === PLATFORM_ARM64;

  const noteParts: Buffer[] = [];
  if (arm64) {
    notes.push('physmem.elf: Checkpoint/Platform is 3 (Apple silicon): an EM_AARCH64 core without CPU state (where ARM registers are kept is not known)');
  } else {
    const cpu = findGroup(cp, 'cpu');
    const byLabel = indexTags(cpu);
    const vcpus = vcpuIndices(cpu, byLabel, notes);
    if (vcpus.length === 0) notes.push('physmem.elf: the checkpoint holds no vCPU state (no cpu group or no vCPUs): the core has no NT_PRSTATUS notes');
    const incomplete: string[] = [];
    for (const c of vcpus) {
      const missing: string[] = [];
      noteParts.push(note(NT_PRSTATUS, prstatus(c, registers(snap, byLabel, c, missing))));
      if (missing.length > 0) incomplete.push(`vCPU ${c}: cpu/${missing.join(', cpu/')}`);
    }
    // One note however many vCPUs lack state: a damaged file must not turn into megabytes of notes.
    if (incomplete.length > 0) {
      const shown = incomplete.slice(0, 4).join('; ') + (incomplete.length > 4 ? `; and ${incomplete.length - 4} more vCPUs` : '');
      notes.push(`physmem.elf: registers missing or unreadable, zeros in their NT_PRSTATUS: ${shown}`);
    }
  }
  const noteData = Buffer.concat(noteParts);
  const runs = pm.map.segments;
  const phnum = (noteData.length > 0 ? 1 : 0) + runs.length;
  const xnum = phnum >= PN_XNUM;

  const phoff = EHDR_SIZE;
  const shoff = xnum ? phoff + phnum * PHDR_SIZE : 0;
  const noteOffset = phoff + phnum * PHDR_SIZE + (xnum ? SHDR_SIZE : 0);
  const headerSize = noteOffset + noteData.length;
  const head = Buffer.alloc(headerSize);

  head.write('\x7fELF', 0, 'latin1');
  head[4] = 2; // ELFCLASS64
  head[5] = 1; // ELFDATA2LSB
  head[6] = 1; // EV_CURRENT; OSABI 0 (System V), as Linux's own cores
  head.writeUInt16LE(ET_CORE, 16);
  head.writeUInt16LE(arm64 ? EM_AARCH64 : EM_X86_64, 18);
  head.writeUInt32LE(1, 20); // e_version
  head.writeBigUInt64LE(BigInt(phoff), 32);
  head.writeBigUInt64LE(BigInt(shoff), 40);
  head.writeUInt16LE(EHDR_SIZE, 52);
  head.writeUInt16LE(PHDR_SIZE, 54);
  head.writeUInt16LE(xnum ? PN_XNUM : phnum, 56);
  head.writeUInt16LE(xnum ? SHDR_SIZE : 0, 58);
  head.writeUInt16LE(xnum ? 1 : 0, 60);
  if (xnum) head.writeUInt32LE(phnum, shoff + 44); // section 0's sh_info

  let ph = phoff;
  if (noteData.length > 0) {
    writePhdr(head, ph, { type: PT_NOTE, flags: 0, offset: noteOffset, vaddr: 0, paddr: 0, filesz: noteData.length, memsz: 0, align: 4 });
    ph += PHDR_SIZE;
    noteData.copy(head, noteOffset);
  }
  const extents: Extent[] = [{ start: 0, length: headerSize, bytes: head }];
  let at = headerSize;
  for (const r of runs) {
    // p_offset ≡ p_vaddr (mod p_align), as loaders require; runs start on pages, so page-aligned.
    const offset = align(at - (r.start % PAGE), PAGE) + (r.start % PAGE);
    writePhdr(head, ph, { type: PT_LOAD, flags: PF_R | PF_W | PF_X, offset, vaddr: r.start, paddr: r.start, filesz: r.length, memsz: r.length, align: PAGE });
    ph += PHDR_SIZE;
    extents.push({ start: offset, length: r.length, source: pm.file, sourceOffset: r.fileOffset });
    at = offset + r.length;
  }
  return { extents, size: at, notes };
}
