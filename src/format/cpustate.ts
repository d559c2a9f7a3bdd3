import { NOT_IN_SYSCALL, type CpuState, type RegName, type SystemRegName, type VcpuState } from './cpu';
import type { RandomAccess } from '../io/source';
import { findGroup, findTag, indexTags, tagUint, type Checkpoint, type Group } from './checkpoint';
import { tagLabel, type Tag } from './tags';

/**
 * A checkpoint's vCPU registers, from the `cpu` group. Real files use one of two layouts, and
 * crash (written at VMware) reads both:
 *   older: one inline tag per register (rax[c] .. r15[c]), CR64[c][n] / CR[c][n] inline,
 *          IDTR[c][0] u16 limit + IDTR[c][1]/[2] u32 low/high base (GDTR alike), eflags or EFLAGS;
 *   newer: blocks gpregs[c] (16 × u64, x86 encoding order), CR64[c] (9 × u64, CR0..CR8),
 *          IDTR[c] / GDTR[c] (u16 limit + u64 base).
 * Both: rip[c], S[c][seg] selectors and S.base64[c][seg] bases (es cs ss ds fs gs ldtr tr).
 */

/** gpregs[c] slot order (x86 encoding order); slots 4 and 5 are rsp and rbp as the encoding has them. */
const GPREGS: readonly RegName[] = ['rax', 'rcx', 'rdx', 'rbx', 'rsp', 'rbp', 'rsi', 'rdi', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15'];
/** S[c][seg] and S.base64[c][seg] index order. */
const SEGMENTS: readonly RegName[] = ['es', 'cs', 'ss', 'ds', 'fs', 'gs'];
const FS = 4;
const GS = 5;
/** CR64[c] block slots / CR64[c][n] indices that user tools care about. */
const CONTROL: readonly [SystemRegName, number][] = [['cr0', 0], ['cr2', 2], ['cr3', 3], ['cr4', 4], ['cr8', 8]];
/** No register block of either layout is larger than this; a bigger "register" is damage, not read. */
const MAX_REG_BLOCK = 256;

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
 * A tag's value bytes, inline or a small plain block read from the file (registers are metadata:
 * read once, when the view is built). Null when absent, compressed, too large, or cut off.
 */
function valueBytes(src: RandomAccess, tag: Tag | undefined, want: number): Buffer | null {
  if (!tag || tag.compressed || tag.size < want || tag.size > MAX_REG_BLOCK) return null;
  if (tag.inline) return tag.inline;
  const buf = Buffer.alloc(want);
  return src.readAtSync(buf, tag.dataOffset) === want ? buf : null;
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

function vcpuState(src: RandomAccess, byLabel: ReadonlyMap<string, Tag>, c: number): VcpuState {
  const find = (name: string, ...indices: number[]): Tag | undefined => byLabel.get(tagLabel({ name, indices }));
  const regs = new Map<RegName, bigint>([['orig_rax', NOT_IN_SYSCALL]]);
  const system = new Map<SystemRegName, bigint>();
  const missing: string[] = [];
  const one = (reg: RegName, label: string, tag: Tag | undefined): void => {
    const v = inlineU64(tag);
    if (v === undefined) missing.push(`cpu/${label}`);
    else regs.set(reg, v);
  };

  one('rip', `rip[${c}]`, find('rip', c));
  one('eflags', `eflags[${c}]`, find('eflags', c) ?? find('EFLAGS', c));
  SEGMENTS.forEach((seg, k) => one(seg, `S[${c}][${k}]`, find('S', c, k)));
  one('fs_base', `S.base64[${c}][${FS}]`, find('S.base64', c, FS));
  one('gs_base', `S.base64[${c}][${GS}]`, find('S.base64', c, GS));

  // General registers: the newer gpregs[c] block, else the older one tag per register.
  const gp = valueBytes(src, find('gpregs', c), GPREGS.length * 8);
  if (gp) GPREGS.forEach((reg, i) => regs.set(reg, gp.readBigUInt64LE(8 * i)));
  else {
    const inline = GPREGS.map((reg) => [reg, inlineU64(find(reg, c))] as const);
    const found = inline.filter(([, v]) => v !== undefined);
    for (const [reg, v] of found) regs.set(reg, v as bigint);
    if (found.length < GPREGS.length) {
      missing.push(found.length === 0 ? `cpu/gpregs[${c}]` : inline.filter(([, v]) => v === undefined).map(([reg]) => `cpu/${reg}[${c}]`).join(', '));
    }
  }

  // Control registers: the CR64[c] block, else CR64[c][n], else the 32-bit CR[c][n].
  const cr = valueBytes(src, find('CR64', c), 8 * 9);
  for (const [reg, n] of CONTROL) {
    const v = cr ? cr.readBigUInt64LE(8 * n) : inlineU64(find('CR64', c, n)) ?? inlineU64(find('CR', c, n));
    if (v !== undefined) system.set(reg, v);
  }
  // Descriptor tables: a 10-byte block (u16 limit, u64 base), else three inline tags.
  for (const table of ['gdtr', 'idtr'] as const) {
    const name = table.toUpperCase();
    const blk = valueBytes(src, find(name, c), 10);
    if (blk) {
      system.set(`${table}_limit`, BigInt(blk.readUInt16LE(0)));
      system.set(`${table}_base`, blk.readBigUInt64LE(2));
      continue;
    }
    const limit = inlineU64(find(name, c, 0));
    const low = inlineU64(find(name, c, 1));
    const high = inlineU64(find(name, c, 2));
    if (limit !== undefined) system.set(`${table}_limit`, limit);
    if (low !== undefined && high !== undefined) system.set(`${table}_base`, (high << 32n) | (low & 0xffffffffn));
  }
  return { index: c, regs, system, missing };
}

/** The CPU state of a checkpoint: every vCPU's registers in whichever layout the file uses. */
export function checkpointCpuState(cp: Checkpoint, src: RandomAccess): CpuState {
  const notes: string[] = [];
  if (tagUint(findTag(cp, 'Checkpoint', 'Platform')) === PLATFORM_ARM64) {
    notes.push('physmem.elf: Checkpoint/Platform is 3 (Apple silicon): an EM_AARCH64 core without CPU state (where ARM registers are kept is not known)');
    return { arch: 'aarch64', vcpus: [], notes, source: 'the checkpoint' };
  }
  const cpu = findGroup(cp, 'cpu');
  const byLabel = indexTags(cpu);
  const vcpus = vcpuIndices(cpu, byLabel, notes).map((c) => vcpuState(src, byLabel, c));
  return { arch: 'x86_64', vcpus, notes, source: 'the checkpoint' };
}
