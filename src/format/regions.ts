import { findGroup, indexTags, tagUint, type Checkpoint } from './checkpoint';
import { hex } from './integers';

export const PAGE_SIZE = 4096;

/** A run of guest-physical memory: `start` is the guest-physical address, stored at `fileOffset` of the memory file. */
export interface Run {
  start: number;
  length: number;
  fileOffset: number;
}

/** Where the guest's pages are: the Memory block inside the checkpoint, or a whole .vmem file. */
export interface MemoryBlob {
  /** File offset of the blob's first byte in the memory file. */
  offset: number;
  /** Bytes the blob is declared to hold (the block's stored size, or the .vmem's size). */
  length: number;
  /** True for a .vmem: its length is just the file's size, so runs past it mean truncation, not bad regions. */
  wholeFile: boolean;
}

/**
 * `layoutUnknown`: the failure is missing information (the group or its region tags lost or
 * damaged), not a contradiction; the memory file could still be served flat if the user says so.
 */
export type RunsResult = { ok: true; runs: Run[]; notes: string[] } | { ok: false; error: string; layoutUnknown?: boolean };

/** The whole blob as memory from address 0: what --assume-flat serves when the layout is unknown. */
export function flatRuns(blob: MemoryBlob): Run[] {
  return blob.length > 0 ? [{ start: 0, length: blob.length, fileOffset: blob.offset }] : [];
}

const REGION_TAG = /^region(PPN|Size|PageNum)$/;

interface Region {
  index: number;
  ppn: number;
  pageNum: number;
  pages: number;
}

/** Guest-physical base of a region-less Fusion-on-Apple-silicon blob (Checkpoint/Platform 3; LeechCore's observation). */
const ARM64_PLATFORM = 3;
const ARM64_RAM_BASE = 0x80000000;

/**
 * Derive the guest-physical runs from the `memory` group.
 * Region i maps guest-physical [regionPPN[i], +regionSize[i]) pages to blob page regionPageNum[i]
 * (absolute in the blob, as Volatility, Rekall and LeechCore read it). No regions: the blob is
 * memory from address 0. Between regions lie holes, which are not stored.
 */
export function buildRuns(cp: Checkpoint, blob: MemoryBlob): RunsResult {
  const notes: string[] = [];
  const unknown = (error: string): RunsResult => ({ ok: false, error, layoutUnknown: true });
  const mem = findGroup(cp, 'memory');
  // No memory group at all: nothing says whether there are holes. Flat would put every page
  // above the PCI hole at the wrong address, so it is never assumed silently.
  if (!mem) return unknown('the checkpoint has no memory group, the group that says where guest memory lies');
  const tags = indexTags(mem);
  const uint = (label: string): number | undefined => tagUint(tags.get(label));
  if (tags.has('regionsCount') && uint('regionsCount') === undefined) {
    return unknown('memory/regionsCount is not an integer of 1, 2, 4 or 8 bytes below 2^53');
  }
  let count = uint('regionsCount');
  const declared = count !== undefined;
  if (count === undefined) {
    const listed = mem.tags.filter((t) => t.name === 'regionPPN' && t.indices.length === 1).map((t) => t.indices[0] as number);
    const anyRegionTag = mem.tags.some((t) => REGION_TAG.test(t.name));
    // A stream that ended early (damage, or a group past the end of the file) before the Memory
    // block may have lost its region tags: "no regions" cannot be told from "regions lost".
    if (!mem.complete && !mem.tags.some((t) => t.name === 'Memory')) {
      return unknown(`the memory group is damaged (its tag stream ended early after ${mem.tags.length} tags${anyRegionTag ? '' : ', before any region tag'})`);
    }
    if (!anyRegionTag) count = 0;
    else {
      // regionsCount absent while region tags are present: count regions 0..n-1 that have both
      // a regionPPN[i] and a regionSize[i].
      const n = new Set(listed).size;
      const complete = listed.length === n && Array.from({ length: n }, (_, i) => i).every((i) => tags.has(`regionPPN[${i}]`) && tags.has(`regionSize[${i}]`));
      if (n === 0 || !complete) return unknown('memory/regionsCount is absent and the region tags do not describe regions 0..n-1 (each needs regionPPN[i] and regionSize[i])');
      count = n;
      notes.push(`memory/regionsCount is absent: counted ${n} region${n === 1 ? '' : 's'} from memory/regionPPN[i] and memory/regionSize[i]`);
    }
  }

  if (count === 0) {
    if (blob.length === 0) return { ok: false, error: 'the memory blob is empty' };
    let base = 0;
    const platform = tagUint(findGroup(cp, 'Checkpoint')?.tags.find((t) => t.name === 'Platform'));
    if (platform === ARM64_PLATFORM) {
      base = ARM64_RAM_BASE;
      notes.push(`Checkpoint/Platform is 3 (Apple silicon) and there are no region tags: assumed guest RAM starts at ${hex(base)}`);
    }
    return { ok: true, runs: [{ start: base, length: blob.length, fileOffset: blob.offset }], notes };
  }

  // Every region needs three tags, so a count beyond a third of the group is garbage: refuse it
  // before looping over it.
  if (declared && count > mem.tags.length / 3) {
    return unknown(`memory/regionsCount says ${count} regions, but the memory group has only ${mem.tags.length} tags`);
  }
  const regions: Region[] = [];
  for (let i = 0; i < count; i++) {
    const field = (name: string): number | string => {
      const v = uint(`${name}[${i}]`);
      return v === undefined ? `memory/${name}[${i}] is missing or not an integer (regionsCount is ${count})` : v;
    };
    const ppn = field('regionPPN');
    let pageNum = field('regionPageNum');
    const pages = field('regionSize');
    // One region without regionPageNum: it can only start at the blob's first page (Rekall reads it so).
    if (count === 1 && !tags.has('regionPageNum[0]')) {
      pageNum = 0;
      notes.push('memory/regionPageNum[0] is absent and there is a single region: took it to start at blob page 0');
    }
    for (const v of [ppn, pageNum, pages]) if (typeof v === 'string') return unknown(v);
    if ((pages as number) > 0) regions.push({ index: i, ppn: ppn as number, pageNum: pageNum as number, pages: pages as number });
  }

  const describe = (r: Region): string =>
    `region ${r.index} (guest-physical ${hex(r.ppn * PAGE_SIZE)}, ${r.pages} pages at blob page ${r.pageNum})`;
  const overlap = (key: (r: Region) => number, space: string): string | null => {
    const sorted = [...regions].sort((a, b) => key(a) - key(b));
    for (let i = 1; i < sorted.length; i++) {
      const a = sorted[i - 1] as Region;
      const b = sorted[i] as Region;
      if (key(b) < key(a) + a.pages) return `${describe(a)} and ${describe(b)} overlap in ${space}`;
    }
    return null;
  };
  const clash = overlap((r) => r.ppn, 'guest-physical memory') ?? overlap((r) => r.pageNum, 'the memory blob');
  if (clash) return { ok: false, error: clash };

  if (!blob.wholeFile) {
    for (const r of regions) {
      if ((r.pageNum + r.pages) * PAGE_SIZE > blob.length) {
        return { ok: false, error: `${describe(r)} reaches past the end of the Memory block (${blob.length} bytes)` };
      }
    }
  }
  const runs = regions
    .map((r) => ({ start: r.ppn * PAGE_SIZE, length: r.pages * PAGE_SIZE, fileOffset: blob.offset + r.pageNum * PAGE_SIZE }))
    .sort((a, b) => a.start - b.start);
  if (runs.some((r) => !Number.isSafeInteger(r.start + r.length) || !Number.isSafeInteger(r.fileOffset + r.length))) {
    return { ok: false, error: 'the memory regions describe addresses beyond 2^53 bytes' };
  }
  return { ok: true, runs, notes };
}

/**
 * The size a memory file must have for this checkpoint: the end of the highest region in the blob,
 * or, without regions, Checkpoint/memSize (MiB). Null when the metadata does not say. Used to
 * recognise the memory file among differently named .vmem files.
 */
export function expectedBlobSize(cp: Checkpoint): number | null {
  const mem = findGroup(cp, 'memory');
  if (!mem) return null;
  const regions = mem.tags.some((t) => REGION_TAG.test(t.name)) || (tagUint(mem.tags.find((t) => t.name === 'regionsCount')) ?? 0) > 0;
  if (!regions) {
    const mib = tagUint(findGroup(cp, 'Checkpoint')?.tags.find((t) => t.name === 'memSize'));
    return mib && Number.isSafeInteger(mib * 1024 * 1024) ? mib * 1024 * 1024 : null;
  }
  const r = buildRuns(cp, { offset: 0, length: Number.MAX_SAFE_INTEGER, wholeFile: true });
  if (!r.ok || r.runs.length === 0) return null;
  return Math.max(...r.runs.map((run) => run.fileOffset + run.length));
}

/**
 * The guest-physical ranges whose bytes lie past the end of the memory file (a truncated copy):
 * they are served as zeros and each is reported.
 */
export function missingRanges(runs: readonly Run[], fileSize: number): { start: number; length: number }[] {
  const out: { start: number; length: number }[] = [];
  for (const r of runs) {
    const stored = Math.max(0, Math.min(r.length, fileSize - r.fileOffset));
    if (stored < r.length) out.push({ start: r.start + stored, length: r.length - stored });
  }
  return out;
}
