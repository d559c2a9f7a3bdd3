// Deterministic writer of VMware checkpoint files (.vmss/.vmsn) and .vmem memory files,
// for tests and fixtures. Written from the format notes (docs/format.md) only, independently of the
// parser in src/, so that the two can check each other.
//
// Layout produced by writeCheckpoint():
//   header (12 bytes) | group table (count x 80) | group streams, in storeOrder, each
//   optionally preceded by a zero gap (left as a file hole), tags back to back, each stream
//   ended by a zero u16 word. Nothing else: no alignment between streams except what
//   block padding gives. All integers little-endian.

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { screenshotPng } from './png';

export const PAGE = 4096;

export type BlockData =
  | Buffer
  | { size: number; write(fd: number, fileOffset: number): void; read(offset: number, length: number): Buffer };

export interface TagSpec {
  /** 0..255 bytes once UTF-8 encoded (0 is accepted only as a test hook). */
  name: string;
  /** 0..3 u32 indices. */
  indices?: number[];
  /** Inline value, 0..61 bytes (default: empty => zero-length tag). */
  value?: Buffer;
  /**
   * Block value. Stored size = data.size; memSize defaults to data.size. padding: explicit P,
   * else computed so the data starts at a multiple of `align` (absolute file offset) when
   * align is given, else P = 0. Padding bytes are zeros.
   */
  block?: { data: BlockData; compressed?: boolean; memSize?: number; align?: number; padding?: number };
  /** Test hook: force the 6-bit size field. The value/block bytes are written as usual. */
  rawSizeField?: number;
}

export interface GroupSpec {
  name: string;
  tags: TagSpec[];
  omitTerminator?: boolean;
  /** Added to the stream size recorded in the group table. */
  sizeDelta?: number;
}

export interface CheckpointSpec {
  /** Default 0xbed2bed2. */
  magic?: number;
  /** Header word at offset 4, default 0. */
  unknownWord?: number;
  groups: GroupSpec[];
  /** Order in which group streams are laid out in the file (indices into groups). */
  storeOrder?: number[];
  /** Bytes of zero gap (file hole) before each stored stream, indexed like groups. */
  gapBefore?: number[];
}

export interface WrittenTag {
  group: string;
  name: string;
  indices: number[];
  /** Offset of the tag's u16 word. */
  headerOffset: number;
  /** Offset of the value bytes (inline value, or first data byte after block padding). */
  dataOffset: number;
  /** Inline length, or block stored size. */
  size: number;
  /** Block memory size; equals size for inline values. */
  memSize: number;
  block: boolean;
  compressed: boolean;
  /** The inline value, null for blocks. */
  inline: Buffer | null;
}

export interface WrittenGroup {
  name: string;
  tableOffset: number;
  tagsOffset: number;
  /** Bytes from tagsOffset through the terminator, plus sizeDelta (as recorded in the table). */
  size: number;
  tags: WrittenTag[];
}

export interface WrittenCheckpoint {
  path: string;
  fileSize: number;
  magic: number;
  version: number;
  groups: WrittenGroup[];
}

// ---------------------------------------------------------------------------------------
// little helpers

function checkUint(v: number, max: number, what: string): void {
  if (!Number.isSafeInteger(v) || v < 0 || v > max) throw new RangeError(`${what} out of range: ${v}`);
}

export function u8(v: number): Buffer {
  const b = Buffer.alloc(1);
  b.writeUInt8(v, 0);
  return b;
}
export function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v, 0);
  return b;
}
export function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0, 0);
  return b;
}
export function u64(v: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), 0);
  return b;
}
/** `s` as UTF-8, NUL-padded (or truncated) to `len` bytes. */
export function padded(s: string, len: number): Buffer {
  const b = Buffer.alloc(len);
  Buffer.from(s, 'utf8').copy(b, 0, 0, len);
  return b;
}

function blockSize(d: BlockData): number {
  return Buffer.isBuffer(d) ? d.length : d.size;
}

/** `group/name[i][j]`, the usual text form of a tag. */
export function tagKey(group: string, name: string, indices: number[]): string {
  return `${group}/${name}${indices.map((i) => `[${i}]`).join('')}`;
}

/** Find a written tag by its text form, e.g. 'cpu/rip[0]'. Throws when absent. */
export function findTag(cp: WrittenCheckpoint, key: string): WrittenTag {
  for (const g of cp.groups) {
    for (const t of g.tags) if (tagKey(t.group, t.name, t.indices) === key) return t;
  }
  throw new Error(`no tag ${key} in ${cp.path}`);
}

// ---------------------------------------------------------------------------------------
// writeCheckpoint

export function writeCheckpoint(filePath: string, spec: CheckpointSpec): WrittenCheckpoint {
  const magic = (spec.magic ?? 0xbed2bed2) >>> 0;
  const version = magic & 0xf;
  const sizeWidth = version === 0 ? 4 : 8;
  const maxBlockSize = version === 0 ? 0xffffffff : Number.MAX_SAFE_INTEGER;
  const groups = spec.groups;
  const n = groups.length;

  const order = spec.storeOrder ?? groups.map((_, i) => i);
  if (order.length !== n || new Set(order).size !== n || order.some((i) => !Number.isInteger(i) || i < 0 || i >= n)) {
    throw new RangeError(`storeOrder must be a permutation of 0..${n - 1}`);
  }

  const header = Buffer.alloc(12 + 80 * n);
  header.writeUInt32LE(magic, 0);
  header.writeUInt32LE((spec.unknownWord ?? 0) >>> 0, 4);
  header.writeUInt32LE(n, 8);

  // Pieces of the file, written at the end (only non-gap bytes are ever written).
  const bufs: { offset: number; buf: Buffer }[] = [{ offset: 0, buf: header }];
  const lazies: { offset: number; data: Exclude<BlockData, Buffer> }[] = [];

  const written: WrittenGroup[] = new Array(n);
  let cursor = header.length;

  for (const gi of order) {
    const g = groups[gi];
    const gap = spec.gapBefore?.[gi] ?? 0;
    checkUint(gap, Number.MAX_SAFE_INTEGER, 'gapBefore');
    cursor += gap;
    const tagsOffset = cursor;
    const tags: WrittenTag[] = [];

    // Consecutive small buffers are gathered and written in one go.
    let pending: Buffer[] = [];
    let pendingStart = cursor;
    const flush = (): void => {
      if (pending.length) bufs.push({ offset: pendingStart, buf: Buffer.concat(pending) });
      pending = [];
      pendingStart = cursor;
    };
    const emit = (b: Buffer): void => {
      if (!pending.length) pendingStart = cursor;
      pending.push(b);
      cursor += b.length;
    };

    for (const t of g.tags) {
      const nameBuf = Buffer.from(t.name, 'utf8');
      if (nameBuf.length > 255) throw new RangeError(`tag name longer than 255 bytes: ${t.name}`);
      const indices = t.indices ?? [];
      if (indices.length > 3) throw new RangeError(`tag ${t.name}: more than 3 indices`);
      for (const i of indices) checkUint(i, 0xffffffff, `tag ${t.name} index`);
      if (t.block && t.value) throw new Error(`tag ${t.name}: both value and block given`);

      let sizeField: number;
      if (t.block) sizeField = t.block.compressed ? 62 : 63;
      else {
        const len = t.value?.length ?? 0;
        if (len > 61) throw new RangeError(`tag ${t.name}: inline value of ${len} bytes (max 61); use a block`);
        sizeField = len;
      }
      if (t.rawSizeField !== undefined) {
        checkUint(t.rawSizeField, 63, 'rawSizeField');
        sizeField = t.rawSizeField;
      }

      const headerOffset = cursor;
      const hdr = Buffer.alloc(2 + nameBuf.length + 4 * indices.length);
      hdr[0] = (indices.length << 6) | sizeField;
      hdr[1] = nameBuf.length;
      nameBuf.copy(hdr, 2);
      indices.forEach((v, k) => hdr.writeUInt32LE(v, 2 + nameBuf.length + 4 * k));
      emit(hdr);

      if (t.block) {
        const data = t.block.data;
        const stored = blockSize(data);
        const memSize = t.block.memSize ?? stored;
        checkUint(stored, maxBlockSize, `tag ${t.name} stored size`);
        checkUint(memSize, maxBlockSize, `tag ${t.name} memory size`);
        let p: number;
        const afterP = cursor + 2 * sizeWidth + 2; // where padding (or data) starts
        if (t.block.padding !== undefined) p = t.block.padding;
        else if (t.block.align && t.block.align > 1) p = (t.block.align - (afterP % t.block.align)) % t.block.align;
        else p = 0;
        checkUint(p, 0xffff, `tag ${t.name} padding`);
        const bh = Buffer.alloc(2 * sizeWidth + 2 + p);
        if (sizeWidth === 4) {
          bh.writeUInt32LE(stored, 0);
          bh.writeUInt32LE(memSize, 4);
        } else {
          bh.writeBigUInt64LE(BigInt(stored), 0);
          bh.writeBigUInt64LE(BigInt(memSize), 8);
        }
        bh.writeUInt16LE(p, 2 * sizeWidth);
        emit(bh);
        const dataOffset = cursor;
        if (Buffer.isBuffer(data)) emit(data);
        else {
          flush();
          lazies.push({ offset: dataOffset, data });
          cursor += stored;
          pendingStart = cursor;
        }
        tags.push({
          group: g.name, name: t.name, indices: [...indices], headerOffset, dataOffset,
          size: stored, memSize, block: true, compressed: !!t.block.compressed, inline: null,
        });
      } else {
        const v = t.value ?? Buffer.alloc(0);
        const dataOffset = cursor;
        emit(v);
        tags.push({
          group: g.name, name: t.name, indices: [...indices], headerOffset, dataOffset,
          size: v.length, memSize: v.length, block: false, compressed: false, inline: Buffer.from(v),
        });
      }
    }
    if (!g.omitTerminator) emit(Buffer.alloc(2));
    flush();

    const size = cursor - tagsOffset + (g.sizeDelta ?? 0);
    const tableOffset = 12 + 80 * gi;
    const gname = Buffer.from(g.name, 'utf8');
    if (gname.length > 64) throw new RangeError(`group name longer than 64 bytes: ${g.name}`);
    gname.copy(header, tableOffset);
    header.writeBigUInt64LE(BigInt(tagsOffset), tableOffset + 64);
    header.writeBigUInt64LE(BigInt.asUintN(64, BigInt(size)), tableOffset + 72);
    written[gi] = { name: g.name, tableOffset, tagsOffset, size, tags };
  }

  const fileSize = cursor;
  const fd = fs.openSync(filePath, 'w');
  try {
    for (const { offset, buf } of bufs) writeAll(fd, buf, offset);
    for (const { offset, data } of lazies) data.write(fd, offset);
    fs.ftruncateSync(fd, fileSize);
  } finally {
    fs.closeSync(fd);
  }
  return { path: filePath, fileSize, magic, version, groups: written };
}

function writeAll(fd: number, buf: Buffer, offset: number): void {
  let done = 0;
  while (done < buf.length) {
    done += fs.writeSync(fd, buf, done, buf.length - done, offset + done);
  }
}

// ---------------------------------------------------------------------------------------
// memory content

const HEADER_LEN = 28; // 'vmssfs page 0x' + 13 hex digits + '\n'

/**
 * The 4096 bytes the writer puts at guest-physical page N: the ASCII text
 * `vmssfs page 0x%013x\n` (the page's byte address, lowercase hex), then 1017 little-endian
 * u32 words of xorshift32 (x ^= x<<13; x ^= x>>>17; x ^= x<<5), seeded with
 * ((N mod 2^32) * 2654435761 + 1) mod 2^32, or 1 if that is 0; the first word is the
 * state after one step.
 */
export function pageContent(physPage: number, out?: Buffer): Buffer {
  const b = out ? out.subarray(0, PAGE) : Buffer.allocUnsafe(PAGE);
  if (b.length < PAGE) throw new RangeError('pageContent: output buffer smaller than a page');
  b.write(`vmssfs page 0x${(physPage * PAGE).toString(16).padStart(13, '0')}\n`, 0, 'latin1');
  let x = (Math.imul(physPage >>> 0, 2654435761) + 1) >>> 0 || 1;
  for (let o = HEADER_LEN; o < PAGE; o += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b.writeUInt32LE(x, o);
  }
  return b;
}

/** Content of a blob page that no region maps: `vmssfs unmapped blob page %d\n` + zeros. */
export function unmappedPageContent(blobPage: number, out?: Buffer): Buffer {
  const b = out ? out.subarray(0, PAGE) : Buffer.allocUnsafe(PAGE);
  b.fill(0);
  b.write(`vmssfs unmapped blob page ${blobPage}\n`, 0, 'latin1');
  return b;
}

/** Pages per 256 MiB: in sparse mode, the first SPARSE_MARKER_PAGES of every such stride are written. */
export const SPARSE_STRIDE_PAGES = 65536;
export const SPARSE_MARKER_PAGES = 16;

export interface RegionSpec { ppn: number; pageNum: number; pages: number }

/** A stretch of the blob: either mapped by a region or unmapped. */
interface Segment { start: number; end: number; region: RegionSpec | null }

type Range = [number, number];

function mergeRanges(rs: Range[]): Range[] {
  rs.sort((a, b) => a[0] - b[0]);
  const out: Range[] = [];
  for (const r of rs) {
    if (r[1] <= r[0]) continue;
    const last = out[out.length - 1];
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else out.push([r[0], r[1]]);
  }
  return out;
}

/**
 * The page ranges [start, end) (in the numbering `base` uses) that hold real content:
 * all of [start, end) when not sparse; in sparse mode the first 16 pages of the stretch and
 * the first 16 pages of every 65536-page (256 MiB) boundary inside it, boundaries counted
 * on the `strideBase` numbering (guest-physical page for mapped pages, blob page otherwise).
 */
function contentRanges(start: number, end: number, strideBase: number, sparse: boolean): Range[] {
  if (!sparse) return [[start, end]];
  const rs: Range[] = [[start, Math.min(end, start + SPARSE_MARKER_PAGES)]];
  // page p (in this numbering) has stride number strideBase + (p - start)
  const firstStride = Math.ceil(strideBase / SPARSE_STRIDE_PAGES) * SPARSE_STRIDE_PAGES;
  for (let s = firstStride; s - strideBase + start < end; s += SPARSE_STRIDE_PAGES) {
    const p = s - strideBase + start;
    rs.push([p, Math.min(end, p + SPARSE_MARKER_PAGES)]);
  }
  return mergeRanges(rs);
}

/** Model of the memory blob (embedded Memory block or .vmem) and the flat physical image. */
class MemoryModel {
  readonly regions: RegionSpec[]; // sorted by ppn, zero-size ones dropped
  readonly segments: Segment[]; // cover [0, blobPages), sorted
  readonly blobRanges: Range[]; // blob pages holding real content (everything else: zero hole)

  constructor(readonly blobPages: number, regions: RegionSpec[], readonly sparse: boolean) {
    checkUint(blobPages, 2 ** 40, 'blobPages');
    for (const r of regions) {
      checkUint(r.ppn, 0xffffffff, 'region ppn');
      checkUint(r.pageNum, 0xffffffff, 'region pageNum');
      checkUint(r.pages, 0xffffffff, 'region pages');
      if (r.pageNum + r.pages > blobPages) {
        throw new RangeError(`region ${JSON.stringify(r)} extends beyond the blob (${blobPages} pages)`);
      }
    }
    this.regions = regions.filter((r) => r.pages > 0).sort((a, b) => a.ppn - b.ppn);
    for (let i = 1; i < this.regions.length; i++) {
      const a = this.regions[i - 1];
      if (a.ppn + a.pages > this.regions[i].ppn) throw new RangeError('regions overlap in guest-physical space');
    }
    const byBlob = [...this.regions].sort((a, b) => a.pageNum - b.pageNum);
    const segs: Segment[] = [];
    let c = 0;
    for (const r of byBlob) {
      if (r.pageNum < c) throw new RangeError('regions overlap in the memory blob');
      if (r.pageNum > c) segs.push({ start: c, end: r.pageNum, region: null });
      segs.push({ start: r.pageNum, end: r.pageNum + r.pages, region: r });
      c = r.pageNum + r.pages;
    }
    if (c < blobPages) segs.push({ start: c, end: blobPages, region: null });
    this.segments = segs;
    const rs: Range[] = [];
    for (const s of segs) rs.push(...contentRanges(s.start, s.end, s.region ? s.region.ppn : s.start, sparse));
    this.blobRanges = mergeRanges(rs);
  }

  /** Is guest-physical page N of region r stored with content (false: a zero hole)? */
  physHasContent(n: number, r: RegionSpec): boolean {
    return !this.sparse || n - r.ppn < SPARSE_MARKER_PAGES || n % SPARSE_STRIDE_PAGES < SPARSE_MARKER_PAGES;
  }

  private segmentOf(b: number): Segment {
    let lo = 0;
    let hi = this.segments.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.segments[mid].start <= b) lo = mid;
      else hi = mid - 1;
    }
    return this.segments[lo];
  }

  /** Exact bytes of blob page b as stored on disk (holes = zeros). */
  blobPage(b: number, out: Buffer): Buffer {
    const s = this.segmentOf(b);
    if (s.region) {
      const n = s.region.ppn + (b - s.region.pageNum);
      if (this.physHasContent(n, s.region)) return pageContent(n, out);
    } else if (!this.sparse || b - s.start < SPARSE_MARKER_PAGES || b % SPARSE_STRIDE_PAGES < SPARSE_MARKER_PAGES) {
      return unmappedPageContent(b, out);
    }
    const z = out.subarray(0, PAGE);
    z.fill(0);
    return z;
  }

  /** Lazy BlockData writing the blob (content pages only, 1 MiB batches) at a file offset. */
  blockData(): Exclude<BlockData, Buffer> {
    const size = this.blobPages * PAGE;
    return {
      size,
      write: (fd: number, fileOffset: number): void => {
        const BATCH = 256;
        const buf = Buffer.allocUnsafe(BATCH * PAGE);
        for (const [start, end] of this.blobRanges) {
          for (let p = start; p < end; p += BATCH) {
            const cnt = Math.min(BATCH, end - p);
            for (let k = 0; k < cnt; k++) this.blobPage(p + k, buf.subarray(k * PAGE, (k + 1) * PAGE));
            writeAll(fd, buf.subarray(0, cnt * PAGE), fileOffset + p * PAGE);
          }
        }
      },
      read: (offset: number, length: number): Buffer => {
        if (offset < 0 || length < 0 || offset + length > size) throw new RangeError('read beyond the memory blob');
        const out = Buffer.alloc(length);
        const tmp = Buffer.allocUnsafe(PAGE);
        let o = offset;
        while (o < offset + length) {
          const b = Math.floor(o / PAGE);
          const inPage = o - b * PAGE;
          const n = Math.min(PAGE - inPage, offset + length - o);
          this.blobPage(b, tmp).copy(out, o - offset, inPage, inPage + n);
          o += n;
        }
        return out;
      },
    };
  }
}

// ---------------------------------------------------------------------------------------
// writeSnapshot

export interface SnapshotOptions {
  magic?: number;
  /** Memory[0][0] block inside the file; or pages in a sibling .vmem; or no memory at all. */
  memory: 'embedded' | 'vmem' | 'none';
  /** Omitted: no region tags, the blob is memory from physical 0. */
  regions?: RegionSpec[];
  /** Size of the memory blob (or .vmem) in pages. */
  blobPages: number;
  /** Only write marker pages, leave the rest as file holes (see SPARSE_* and MemoryModel). */
  sparse?: boolean;
  /** Default 2. */
  vcpus?: number;
  /** How the cpu group stores registers (default 'mixed'). */
  cpuLayout?: CpuLayout;
  /** The eflags tag's name: 'eflags' (default) or 'EFLAGS', as some files spell it. */
  eflagsName?: 'eflags' | 'EFLAGS';
  /** Snapshot/cfgFile block (text + 3 trailing NULs); default a plausible .vmx; null = absent. */
  cfgFile?: string | null;
  /** MKSVMX/imageData PNG block; default true. */
  screenshot?: boolean;
  /** Memory block written with size field 62 (the bytes are just the plain pattern). */
  compressedMemory?: boolean;
  extraGroups?: GroupSpec[];
  /** Store group streams in an order different from the table (memory first, Checkpoint last). */
  shuffle?: boolean;
  /** Explicit memory-file path instead of the sibling .vmem. */
  vmemPath?: string;
  /** Alignment of the Memory block data, default 65536. */
  memoryAlign?: number;
  /** Indices of the embedded Memory tag: default [0, 0]; [] is the plain `Memory` of older single-file checkpoints. */
  memoryIndices?: number[];
  /** Leave out memory/regionsCount (the region tags stay). */
  omitRegionsCount?: boolean;
  /** Leave out every memory/regionPageNum[i]. */
  omitRegionPageNum?: boolean;
}

export interface PhysRun { physAddr: number; fileOffset: number; length: number; file: string }

export interface WrittenSnapshot extends WrittenCheckpoint {
  vmemPath: string | null;
  /** Expected guest-physical runs, one per non-empty region (not merged), sorted by physAddr. */
  runs: PhysRun[];
  /** End of the highest run (0 when there is no memory). */
  physSize: number;
  /** File offset of the memory blob (0 for vmem and none). */
  blobOffset: number;
  /** Expected bytes of the flat physical image [0, physSize); holes = zeros; short at the end like pread. */
  readPhys(addr: number, length: number): Buffer;
  /** sha256 hex of the whole flat image [0, physSize). */
  physSha256(): string;
  /** Look up by 'group/name[i][j]', e.g. 'cpu/rip[0]'. Throws when absent. */
  tag(path: string): WrittenTag;
}

const MiB = 1024 * 1024;

export function defaultCfgFile(vcpus: number, memMiB: number): string {
  return [
    '.encoding = "UTF-8"',
    'config.version = "8"',
    'virtualHW.version = "21"',
    'displayName = "vmssfs-fixture"',
    'guestOS = "windows9-64"',
    `memsize = "${memMiB}"`,
    `numvcpus = "${vcpus}"`,
    'firmware = "efi"',
    'scsi0.present = "TRUE"',
    'scsi0.virtualDev = "lsisas1068"',
    'scsi0:0.present = "TRUE"',
    'scsi0:0.fileName = "vmssfs-fixture.vmdk"',
    'ethernet0.present = "TRUE"',
    'ethernet0.connectionType = "nat"',
    'ethernet0.virtualDev = "e1000e"',
    'ethernet0.addressType = "generated"',
    'ethernet0.generatedAddress = "00:0c:29:5a:11:e0"',
    'uuid.bios = "56 4d 1a 2b 3c 4d 5e 6f-70 81 92 a3 b4 c5 d6 e7"',
    'checkpoint.vmState = "vmssfs-fixture.vmss"',
    '',
  ].join('\n');
}

/**
 * How the cpu group stores registers (FORMAT.md "CPU state: two layouts"):
 * - 'mixed' (default, what the fixtures hold): gpregs[c] block, CR/CR64/GDTR/IDTR inline;
 * - 'older': one inline u64 tag per general register (rax[c]..r15[c]), CR64[c][n] and CR[c][n]
 *   inline for n = 0..4 and 8, IDTR/GDTR as [c][0] u16 limit, [c][1]/[2] u32 low/high base;
 * - 'newer': gpregs[c] (16 × u64), CR64[c] (9 × u64, CR0..CR8), IDTR[c]/GDTR[c] (u16 limit +
 *   u64 base) as blocks, no CR tags.
 */
export type CpuLayout = 'mixed' | 'older' | 'newer';

/** General registers in gpregs[c] slot order (x86 encoding order). */
export const GPREG_NAMES = ['rax', 'rcx', 'rdx', 'rbx', 'rsp', 'rbp', 'rsi', 'rdi', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15'] as const;
const SEGMENT_NAMES = ['es', 'cs', 'ss', 'ds', 'fs', 'gs'] as const;

/**
 * The register values the writer stores for vCPU c, under Linux user_regs_struct names (rip,
 * eflags, the general registers, segment selectors, fs_base, gs_base) plus cr0, cr2, cr3, cr4,
 * cr8, gdtr_base, gdtr_limit, idtr_base, idtr_limit. Every layout stores these same values.
 */
export function cpuRegisters(c: number): Record<string, bigint> {
  const C = BigInt(c);
  const regs: Record<string, bigint> = {};
  regs.rip = 0xfffff80002c1c0ban + C;
  regs.eflags = 0x86n + C;
  GPREG_NAMES.forEach((name, r) => (regs[name] = 0x1111000000000000n + C * 0x100n + BigInt(r)));
  const seg = [0x2bn, 0x10n, 0x2bn, 0x2bn, 0x53n, 0x2bn];
  SEGMENT_NAMES.forEach((name, k) => (regs[name] = seg[k]));
  regs.fs_base = 0x7efdd000n + C * 0x2000n;
  regs.gs_base = 0xfffff80002e0ad00n + C * 0x1000000n;
  regs.cr0 = 0x80050033n;
  regs.cr2 = 0xfffff88000a01000n + C * 0x10n;
  regs.cr3 = 0x187000n + C * 0x1000n; // page-aligned
  regs.cr4 = 0x406f8n;
  regs.cr8 = 0n;
  regs.gdtr_base = 0xfffff80000b95000n + C * 0x10000n;
  regs.gdtr_limit = 127n;
  regs.idtr_base = 0xfffff80000b95080n + C * 0x10000n;
  regs.idtr_limit = 4095n;
  return regs;
}

function cpuGroup(vcpus: number, layout: CpuLayout = 'mixed', eflagsName = 'eflags'): GroupSpec {
  const tags: TagSpec[] = [{ name: 'cpu:numVCPUs', value: u32(vcpus) }];
  for (let c = 0; c < vcpus; c++) {
    const R = cpuRegisters(c);
    const cr64 = [R.cr0, 0n, R.cr2, R.cr3, R.cr4, 0n, 0n, 0n, R.cr8];
    const rip = R.rip;
    tags.push({ name: eflagsName, indices: [c], value: u32(Number(R.eflags)) });
    tags.push({ name: 'rip', indices: [c], value: u64(rip) });
    tags.push({ name: 'eip', indices: [c], value: u32(Number(rip & 0xffffffffn)) });
    tags.push({ name: 'halted', indices: [c], value: u8(c % 2) });
    if (layout === 'newer') {
      const block = Buffer.concat(cr64.map((v) => u64(v)));
      tags.push({ name: 'CR64', indices: [c], block: { data: block } });
    } else {
      const ns = layout === 'older' ? [0, 1, 2, 3, 4, 8] : [0, 1, 2, 3, 4];
      for (const k of ns) tags.push({ name: 'CR', indices: [c, k], value: u32(Number(cr64[k] & 0xffffffffn)) });
      for (const k of ns) tags.push({ name: 'CR64', indices: [c, k], value: u64(cr64[k]) });
    }
    const dr = [0n, 0n, 0n, 0n, 0n, 0n, 0xffff0ff0n, 0x400n];
    for (let k = 0; k < 8; k++) tags.push({ name: 'DR64', indices: [c, k], value: u64(dr[k]) });
    for (const t of ['GDTR', 'IDTR'] as const) {
      const base = t === 'GDTR' ? R.gdtr_base : R.idtr_base;
      const limit = Number(t === 'GDTR' ? R.gdtr_limit : R.idtr_limit);
      if (layout === 'newer') {
        tags.push({ name: t, indices: [c], block: { data: Buffer.concat([u16(limit), u64(base)]) } });
      } else {
        tags.push({ name: t, indices: [c, 0], value: u16(limit) });
        tags.push({ name: t, indices: [c, 1], value: u32(Number(base & 0xffffffffn)) });
        tags.push({ name: t, indices: [c, 2], value: u32(Number(base >> 32n)) });
      }
    }
    SEGMENT_NAMES.forEach((name, k) => tags.push({ name: 'S', indices: [c, k], value: u16(Number(R[name])) }));
    const bases = [0n, 0n, 0n, 0n, R.fs_base, R.gs_base];
    for (let k = 0; k < 6; k++) tags.push({ name: 'S.base64', indices: [c, k], value: u64(bases[k]) });
    if (layout === 'older') {
      for (const name of GPREG_NAMES) tags.push({ name, indices: [c], value: u64(R[name]) });
    } else {
      const gp = Buffer.concat(GPREG_NAMES.map((name) => u64(R[name])));
      tags.push({ name: 'gpregs', indices: [c], block: { data: gp } });
    }
    tags.push({ name: 'FPUregs', indices: [c, 0, 1], value: u64(0x3ff0000000000000n + BigInt(c)) });
  }
  return { name: 'cpu', tags };
}

function oddNamesGroup(): GroupSpec {
  const seq = (len: number, base: number): Buffer => Buffer.from(Array.from({ length: len }, (_, i) => (base + i) & 0xff));
  const long62 = 'n62_' + 'abcdefghij'.repeat(6).slice(0, 58);
  const long255 = 'n255_' + '0123456789'.repeat(26).slice(0, 250);
  return {
    name: 'Odd names',
    tags: [
      { name: 'a/b%c', value: u32(0xc0ffee) },
      { name: 'empty' },
      { name: 'three', value: Buffer.from([0xaa, 0xbb, 0xcc]) },
      { name: 'inline61', value: seq(61, 1) },
      { name: long62, value: u8(62) },
      { name: long255, value: u16(255) },
      { name: 'maxIndex', indices: [0xffffffff], value: u8(1) },
    ],
  };
}

function siblingVmem(p: string): string {
  const parsed = path.parse(p);
  return path.join(parsed.dir, parsed.name + '.vmem');
}

export function writeSnapshot(filePath: string, opts: SnapshotOptions): WrittenSnapshot {
  const vcpus = opts.vcpus ?? 2;
  checkUint(vcpus, 0xffffffff, 'vcpus');
  const sparse = !!opts.sparse;
  const explicitRegions = opts.regions !== undefined;
  const regionList: RegionSpec[] = explicitRegions
    ? (opts.regions as RegionSpec[]).map((r) => ({ ...r }))
    : [{ ppn: 0, pageNum: 0, pages: opts.blobPages }];
  const model = new MemoryModel(opts.blobPages, regionList, sparse);

  const memPages = explicitRegions ? regionList.reduce((a, r) => a + r.pages, 0) : opts.blobPages;
  const memMiB = Math.floor((memPages * PAGE) / MiB);

  // --- groups, in table order
  const groups: GroupSpec[] = [];
  groups.push({
    name: 'Checkpoint',
    tags: [
      { name: 'fileversion', value: u32(0xa) },
      { name: 'ProductName', block: { data: padded('VMware Workstation', 256) } },
      { name: 'VersionNumber', block: { data: padded('17.5.0', 256) } },
      { name: 'Platform', value: u32(1) },
      { name: 'usageMode', value: u32(1) },
      { name: 'memSize', value: u32(memMiB) },
      { name: 'maxFBSize', value: u32(0x800000) },
    ],
  });
  groups.push(cpuGroup(vcpus, opts.cpuLayout, opts.eflagsName));

  const memTags: TagSpec[] = [{ name: 'align_mask', value: u32(0xffff) }];
  if (explicitRegions) {
    const rs = opts.regions as RegionSpec[];
    if (!opts.omitRegionsCount) memTags.push({ name: 'regionsCount', value: u32(rs.length) });
    if (!opts.omitRegionPageNum) rs.forEach((r, i) => memTags.push({ name: 'regionPageNum', indices: [i], value: u32(r.pageNum) }));
    rs.forEach((r, i) => memTags.push({ name: 'regionPPN', indices: [i], value: u32(r.ppn) }));
    rs.forEach((r, i) => memTags.push({ name: 'regionSize', indices: [i], value: u32(r.pages) }));
  }
  if (opts.memory === 'embedded') {
    memTags.push({
      name: 'Memory',
      indices: opts.memoryIndices ?? [0, 0],
      block: { data: model.blockData(), compressed: !!opts.compressedMemory, align: opts.memoryAlign ?? 65536 },
    });
  }
  const memoryGroupIndex = groups.length;
  groups.push({ name: 'memory', tags: memTags });

  const cfg = opts.cfgFile === undefined ? defaultCfgFile(vcpus, memMiB) : opts.cfgFile;
  if (cfg !== null) {
    groups.push({
      name: 'Snapshot',
      tags: [{ name: 'cfgFile', block: { data: Buffer.concat([Buffer.from(cfg, 'utf8'), Buffer.alloc(3)]) } }],
    });
  }
  if (opts.screenshot ?? true) {
    groups.push({ name: 'MKSVMX', tags: [{ name: 'imageData', block: { data: screenshotPng() } }] });
  }
  groups.push(oddNamesGroup());
  for (const g of opts.extraGroups ?? []) groups.push(g);

  let storeOrder: number[] | undefined;
  if (opts.shuffle) {
    const rest = groups.map((_, i) => i).filter((i) => i !== memoryGroupIndex).reverse();
    storeOrder = [memoryGroupIndex, ...rest]; // memory first, ..., Checkpoint (index 0) last
  }

  const cp = writeCheckpoint(filePath, { magic: opts.magic, groups, storeOrder });

  // --- memory file / runs
  let vmemPath: string | null = null;
  let blobOffset = 0;
  let blobFile: string | null = null;
  if (opts.memory === 'embedded') {
    blobOffset = findTag(cp, tagKey('memory', 'Memory', opts.memoryIndices ?? [0, 0])).dataOffset;
    blobFile = filePath;
  } else if (opts.memory === 'vmem') {
    vmemPath = opts.vmemPath ?? siblingVmem(filePath);
    if (path.resolve(vmemPath) === path.resolve(filePath)) throw new Error('vmem path equals the checkpoint path');
    const fd = fs.openSync(vmemPath, 'w');
    try {
      model.blockData().write(fd, 0);
      fs.ftruncateSync(fd, opts.blobPages * PAGE);
    } finally {
      fs.closeSync(fd);
    }
    blobFile = vmemPath;
  }

  const runs: PhysRun[] = blobFile === null
    ? []
    : model.regions.map((r) => ({
      physAddr: r.ppn * PAGE,
      fileOffset: blobOffset + r.pageNum * PAGE,
      length: r.pages * PAGE,
      file: blobFile as string,
    }));
  const physSize = runs.length ? runs[runs.length - 1].physAddr + runs[runs.length - 1].length : 0;
  const mapped = blobFile === null ? [] : model.regions;

  const readPhys = (addr: number, length: number): Buffer => {
    if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(length) || addr < 0 || length < 0) {
      throw new RangeError(`readPhys(${addr}, ${length})`);
    }
    const end = Math.min(addr + length, physSize);
    const out = Buffer.alloc(Math.max(0, end - addr));
    const tmp = Buffer.allocUnsafe(PAGE);
    for (const r of mapped) {
      const rs = r.ppn * PAGE;
      const re = rs + r.pages * PAGE;
      const s = Math.max(rs, addr);
      const e = Math.min(re, end);
      for (let o = s; o < e;) {
        const n = Math.floor(o / PAGE);
        const inPage = o - n * PAGE;
        const cnt = Math.min(PAGE - inPage, e - o);
        if (model.physHasContent(n, r)) pageContent(n, tmp).copy(out, o - addr, inPage, inPage + cnt);
        o += cnt;
      }
    }
    return out;
  };

  const physSha256 = (): string => {
    const h = crypto.createHash('sha256');
    const zero = Buffer.alloc(MiB);
    const hashZeros = (bytes: number): void => {
      while (bytes > 0) {
        const n = Math.min(bytes, zero.length);
        h.update(n === zero.length ? zero : zero.subarray(0, n));
        bytes -= n;
      }
    };
    const BATCH = 256;
    const buf = Buffer.allocUnsafe(BATCH * PAGE);
    let cur = 0; // physical page
    for (const r of mapped) {
      hashZeros((r.ppn - cur) * PAGE);
      const ranges = contentRanges(r.ppn, r.ppn + r.pages, r.ppn, sparse);
      let p = r.ppn;
      for (const [s, e] of ranges) {
        hashZeros((s - p) * PAGE);
        for (let q = s; q < e; q += BATCH) {
          const cnt = Math.min(BATCH, e - q);
          for (let k = 0; k < cnt; k++) pageContent(q + k, buf.subarray(k * PAGE, (k + 1) * PAGE));
          h.update(buf.subarray(0, cnt * PAGE));
        }
        p = e;
      }
      hashZeros((r.ppn + r.pages - p) * PAGE);
      cur = r.ppn + r.pages;
    }
    return h.digest('hex');
  };

  const index = new Map<string, WrittenTag>();
  for (const g of cp.groups) {
    for (const t of g.tags) {
      const k = tagKey(t.group, t.name, t.indices);
      if (!index.has(k)) index.set(k, t);
    }
  }
  const tag = (key: string): WrittenTag => {
    const t = index.get(key);
    if (!t) throw new Error(`no tag ${key} in ${filePath}`);
    return t;
  };

  return { ...cp, vmemPath, runs, physSize, blobOffset, readPhys, physSha256, tag };
}

// ---------------------------------------------------------------------------------------
// ESXi guest dumps (debug.guest + debug.vmem)

export interface GuestDumpOptions {
  /** Header version: 1, 3, 4, 5, 6 or 7. */
  version: number;
  vcpus: number;
  /** Guest-physical page count including holes. */
  totalPages: number;
  /** At most two holes, in address order: pages not stored in debug.vmem. */
  holes?: { ppn: number; pages: number }[];
  /** Version 7's CPU architecture field: 1 x86 (default), 0 AArch64. */
  arch?: number;
  /** Write debug.vmem beside it (default true). */
  vmem?: boolean;
}

export interface WrittenGuestDump {
  path: string;
  vmemPath: string | null;
  fileSize: number;
  /** Guest-physical runs (between the holes), with their offsets in debug.vmem. */
  runs: PhysRun[];
  physSize: number;
  memoryPages: number;
  readPhys(addr: number, length: number): Buffer;
  /** File offset of each vCPU record. */
  vcpuOffsets: number[];
}

/** Linux x86-64 pt_regs / user_regs_struct order, as a guest dump stores a vCPU's registers. */
const PT_REGS = ['r15', 'r14', 'r13', 'r12', 'rbp', 'rbx', 'r11', 'r10', 'r9', 'r8', 'rax', 'rcx', 'rdx', 'rsi', 'rdi',
  'orig_rax', 'rip', 'cs', 'eflags', 'rsp', 'ss', 'fs_base', 'gs_base', 'ds', 'es', 'fs', 'gs'];

/**
 * Write `file` (named *.guest) and, beside it, the .vmem. Header: u32 version, u32 vCPUs, a
 * reserved gap (13 bytes in version 1, 14 in 3-5, 15 in 6, 8 in 7; filled with 0xee so a reader
 * that misplaces a field notices), main-memory info (u64 last address, u64 pages, u32 reserved,
 * u32 hole count, 2 × {u64 first page, u64 pages}; version 1: u64 last address, u32 pages, u32
 * reserved, u32 hole count, 2 × {u32, u32}, then 8 bytes per hole and 4 more), version 7 then 11
 * bytes whose first u32 is the architecture. Per vCPU: u32 CR0, u64 CR2, CR3, CR4, 10 reserved
 * u64, u64 IDT base, a gap (45 bytes before version 4, else 42), 27 × u64 pt_regs, 17 reserved
 * bytes, 4096 reserved bytes. The .vmem holds the pages outside the holes, in address order,
 * each page's content being pageContent(its guest-physical page).
 */
export function writeGuestDump(file: string, opts: GuestDumpOptions): WrittenGuestDump {
  const { version, vcpus, totalPages } = opts;
  const holes = opts.holes ?? [];
  const gaps: Record<number, number> = { 1: 13, 3: 14, 4: 14, 5: 14, 6: 15, 7: 8 };
  const gap = gaps[version];
  if (gap === undefined) throw new RangeError(`guest dump version ${version} not described`);
  const holePages = holes.reduce((n, h) => n + h.pages, 0);
  const memoryPages = totalPages - holePages;
  const parts: Buffer[] = [u32(version), u32(vcpus), Buffer.alloc(gap, 0xee)];
  const lastAddr = totalPages * PAGE - 1;
  if (version === 1) {
    const hs = [0, 1].map((i) => holes[i] ?? { ppn: 0, pages: 0 });
    parts.push(u64(lastAddr), u32(memoryPages), u32(0), u32(holes.length));
    for (const h of hs) parts.push(u32(h.ppn), u32(h.pages));
    parts.push(Buffer.alloc(8 * holes.length + 4, 0xee));
  } else {
    const hs = [0, 1].map((i) => holes[i] ?? { ppn: 0, pages: 0 });
    parts.push(u64(lastAddr), u64(memoryPages), u32(0), u32(holes.length));
    for (const h of hs) parts.push(u64(h.ppn), u64(h.pages));
    if (version === 7) parts.push(u32(opts.arch ?? 1), Buffer.alloc(7, 0xee));
  }
  const header = Buffer.concat(parts);
  const vcpuGap = version < 4 ? 45 : 42;
  const vcpuOffsets: number[] = [];
  let at = header.length;
  for (let c = 0; c < vcpus; c++) {
    vcpuOffsets.push(at);
    const R = cpuRegisters(c);
    const regs: Record<string, bigint> = { ...R, orig_rax: 0xffffffffffffffffn };
    const rec = Buffer.concat([
      u32(Number(R.cr0)), u64(R.cr2), u64(R.cr3), u64(R.cr4), Buffer.alloc(80, 0xdd), u64(R.idtr_base),
      Buffer.alloc(vcpuGap, 0xcc),
      ...PT_REGS.map((r) => u64(regs[r])),
      Buffer.alloc(17, 0xbb),
      Buffer.alloc(PAGE, 0xaa),
    ]);
    parts.push(rec);
    at += rec.length;
  }
  const guest = Buffer.concat(parts);
  fs.writeFileSync(file, guest);

  // Runs: the stretches between holes; stored in the .vmem that many pages lower.
  const runs: PhysRun[] = [];
  const vmemPath = opts.vmem === false ? null : file.replace(/guest$/i, 'vmem');
  let page = 0;
  let skipped = 0;
  for (const h of [...holes, { ppn: totalPages, pages: 0 }]) {
    if (h.ppn > page) runs.push({ physAddr: page * PAGE, length: (h.ppn - page) * PAGE, fileOffset: (page - skipped) * PAGE, file: vmemPath ?? '' });
    skipped += h.pages;
    page = h.ppn + h.pages;
  }
  if (vmemPath !== null) {
    const fd = fs.openSync(vmemPath, 'w');
    try {
      const buf = Buffer.allocUnsafe(PAGE);
      for (const r of runs) {
        for (let p = 0; p < r.length / PAGE; p++) writeAll(fd, pageContent(r.physAddr / PAGE + p, buf), r.fileOffset + p * PAGE);
      }
      fs.ftruncateSync(fd, memoryPages * PAGE);
    } finally {
      fs.closeSync(fd);
    }
  }
  const physSize = runs.length ? (runs[runs.length - 1].physAddr + runs[runs.length - 1].length) : 0;
  const readPhys = (addr: number, length: number): Buffer => {
    const end = Math.min(addr + length, physSize);
    const out = Buffer.alloc(Math.max(0, end - addr));
    const tmp = Buffer.allocUnsafe(PAGE);
    for (const r of runs) {
      for (let o = Math.max(r.physAddr, addr); o < Math.min(r.physAddr + r.length, end);) {
        const n = Math.floor(o / PAGE);
        const inPage = o - n * PAGE;
        const cnt = Math.min(PAGE - inPage, end - o);
        pageContent(n, tmp).copy(out, o - addr, inPage, inPage + cnt);
        o += cnt;
      }
    }
    return out;
  };
  return { path: file, vmemPath, fileSize: guest.length, runs, physSize, memoryPages, readPhys, vcpuOffsets };
}
