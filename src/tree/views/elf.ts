import { USER_REGS, type CpuState, type RegName } from '../../format/cpu';
import type { PhysMem } from '../../evidence/evidence';
import type { Extent } from '../nodes';
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
export { USER_REGS };

function prstatus(c: number, regs: ReadonlyMap<RegName, bigint>): Buffer {
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
 * AArch64 guests get EM_AARCH64 and no PT_NOTE: their register layout is not described by the
 * sources vmssfs reads, and an AArch64 prstatus full of zeros would only mislead.
 */
export function elfView(pm: PhysMem | null, cpu: CpuState): View | null {
  if (!pm) return null;
  const notes: string[] = [...cpu.notes];
  const arm64 = cpu.arch === 'aarch64';

  const noteParts: Buffer[] = [];
  if (!arm64) {
    if (cpu.vcpus.length === 0) notes.push(`physmem.elf: ${cpu.source} holds no vCPU state${cpu.source === 'the checkpoint' ? ' (no cpu group or no vCPUs)' : ''}: the core has no NT_PRSTATUS notes`);
    const incomplete: string[] = [];
    for (const v of cpu.vcpus) {
      noteParts.push(note(NT_PRSTATUS, prstatus(v.index, v.regs)));
      if (v.missing.length > 0) incomplete.push(`vCPU ${v.index}: ${v.missing.join(', ')}`);
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
