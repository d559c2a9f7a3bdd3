/**
 * Fuzzing: mutate the fixture writer's files and check that vmssfs treats every result as an
 * analyst would want: a one-line error naming the file (exit 1), or the metadata served with
 * warnings (exit 0); never an unexpected exception, a hang or an unbounded allocation.
 *
 * The native FastLZ decoder is held to the JavaScript one on damaged blocks (same bytes or same
 * failure); with `make fuzz`, half as many cases as N. The C seek index is held to the JavaScript
 * one on damaged streams (where the pass stops and why, and every byte it serves); a quarter.
 *
 * `make fuzz N=100000 SEED=1` runs this file; the suite runs `fuzzCases` with a fixed seed.
 * Every input that ever failed is kept in test/corpus/ as a regression case.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { VmssError } from '../src/errors';
import { openEvidence } from '../src/evidence/open';
import { BlockStreamSource } from '../src/io/blockstream';
import { recogniseContainer, type Recognition } from '../src/io/container';
import { EncObjSource } from '../src/io/encobj';
import { BufferSource, type Source } from '../src/io/source';
import { PageCache } from '../src/cache/pagecache';
import { buildTree } from '../src/tree/build';
import type { Node } from '../src/tree/nodes';
import { FastLzStream } from '../test/kit/fastlz';
import { damagedBlocks, decodeJs, decodeNative, difference, guestLikeMemory, intactBlocks } from '../test/kit/fastlz-cases';
import { decoderInUse } from '../src/io/native-decoder';
import { indexContainer, type BlockEntry } from '../src/io/container';
import { NativeSeekIndex, SeekIndex, type IndexHost } from '../src/io/seekindex';
import { FastLzError } from '../src/io/fastlz';
import { writeCheckpoint, writeGuestDump, writeSnapshot, u32, type GroupSpec, type WrittenCheckpoint } from '../test/kit/writer';
import * as crypto from 'node:crypto';

/** xorshift32: deterministic across runs and machines. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = (seed >>> 0) || 0x9e3779b9;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  int(n: number): number {
    return n <= 0 ? 0 : this.next() % n;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)] as T;
  }
}

/** A base file to mutate: its bytes and the offsets of its structures. */
export interface Base {
  name: string;
  /** What the input is named: '.vmss' (a checkpoint) or '.guest' (an ESXi guest dump). */
  ext: '.vmss' | '.guest';
  bytes: Buffer;
  /** A guest dump's debug.vmem, written beside each case (and mutated in size). */
  companion?: Buffer;
  /** Offsets where a truncation or a patch is most telling: header fields, table entries, tag headers, data. */
  boundaries: number[];
  /** Offsets of the group table entries. */
  tableOffsets: number[];
  /** Offsets of the u16 word of every tag. */
  tagHeaders: number[];
  /** The memory blob's [offset, end), to aim overlapping groups at. */
  blob: [number, number] | null;
}

function baseFrom(name: string, w: WrittenCheckpoint, blob: [number, number] | null): Base {
  const bytes = fs.readFileSync(w.path);
  const tags = w.groups.flatMap((g) => g.tags);
  const boundaries = new Set<number>([0, 4, 8, 12]);
  for (const g of w.groups) {
    boundaries.add(g.tableOffset).add(g.tableOffset + 64).add(g.tableOffset + 80).add(g.tagsOffset).add(g.tagsOffset + g.size);
  }
  for (const t of tags) boundaries.add(t.headerOffset).add(t.headerOffset + 2).add(t.dataOffset).add(t.dataOffset + t.size);
  return {
    name,
    ext: '.vmss',
    bytes,
    boundaries: [...boundaries].filter((b) => b <= bytes.length).sort((a, b) => a - b),
    tableOffsets: w.groups.map((g) => g.tableOffset),
    tagHeaders: tags.map((t) => t.headerOffset),
    blob,
  };
}

/** The files mutations start from: several layouts, version 0, and hand-built odd shapes. */
export function makeBases(dir: string): Base[] {
  const bases: Base[] = [];
  const regions = [{ ppn: 0, pageNum: 0, pages: 8 }, { ppn: 0x100000, pageNum: 8, pages: 4 }];
  const embedded = writeSnapshot(path.join(dir, 'embedded.vmss'), { memory: 'embedded', blobPages: 12, regions, memoryAlign: 4096 });
  bases.push(baseFrom('embedded-regions', embedded, [embedded.blobOffset, embedded.blobOffset + 12 * 4096]));
  const flat = writeSnapshot(path.join(dir, 'flat.vmss'), { memory: 'embedded', blobPages: 4, magic: 0xbed2bed0, shuffle: true, memoryAlign: 4096 });
  bases.push(baseFrom('embedded-v0-shuffled', flat, [flat.blobOffset, flat.blobOffset + 4 * 4096]));
  const meta = writeSnapshot(path.join(dir, 'meta.vmss'), { memory: 'vmem', blobPages: 12, regions });
  bases.push(baseFrom('metadata-only', meta, null));

  // Another writer's shapes: duplicate tags, indices past cpu:numVCPUs, names of every length,
  // and a group whose stream overlaps another's.
  const names: GroupSpec = {
    name: 'names',
    tags: Array.from({ length: 255 }, (_, i) => ({ name: 'n'.repeat(i + 1), value: u32(i) })),
  };
  const cpu: GroupSpec = {
    name: 'cpu',
    tags: [
      { name: 'cpu:numVCPUs', value: u32(1) },
      { name: 'rip', indices: [0], value: Buffer.alloc(8, 1) },
      { name: 'rip', indices: [0], value: Buffer.alloc(8, 2) },
      { name: 'rip', indices: [7], value: Buffer.alloc(8, 3) },
      { name: 'gpregs', indices: [9], block: { data: Buffer.alloc(128, 0x11) } },
    ],
  };
  const odd = writeCheckpoint(path.join(dir, 'odd.vmss'), { groups: [cpu, names, { ...cpu }] });
  bases.push(baseFrom('odd-shapes', odd, null));

  // Shapes of older and newer products: register layouts, a plain Memory tag, region tags partly missing.
  const older = writeSnapshot(path.join(dir, 'older.vmss'), { memory: 'embedded', blobPages: 4, memoryIndices: [], cpuLayout: 'older', eflagsName: 'EFLAGS', memoryAlign: 4096 });
  bases.push(baseFrom('older-cpu-plain-memory', older, [older.blobOffset, older.blobOffset + 4 * 4096]));
  const newer = writeSnapshot(path.join(dir, 'newer.vmss'), { memory: 'embedded', blobPages: 12, regions, cpuLayout: 'newer', omitRegionsCount: true, memoryAlign: 4096 });
  bases.push(baseFrom('newer-cpu-counted-regions', newer, [newer.blobOffset, newer.blobOffset + 12 * 4096]));

  // ESXi guest dumps, the oldest and newest header layouts, each with its debug.vmem.
  for (const version of [1, 7]) {
    const g = writeGuestDump(path.join(dir, `v${version}.guest`), { version, vcpus: 2, totalPages: 24, holes: [{ ppn: 4, pages: 4 }, { ppn: 12, pages: 2 }] });
    const bytes = fs.readFileSync(g.path);
    const boundaries = new Set<number>([0, 4, 8, 16, 20, 24, 28, 32, 40, 48, 56, 64, 72, 80, 84, 88]);
    for (const o of g.vcpuOffsets) boundaries.add(o).add(o + 116).add(o + 4096);
    bases.push({
      name: `guest-dump-v${version}`, ext: '.guest', bytes, companion: fs.readFileSync(g.vmemPath as string),
      boundaries: [...boundaries].filter((b) => b <= bytes.length).sort((a, b) => a - b), tableOffsets: [], tagHeaders: [], blob: null,
    });
  }
  return bases;
}

/** One mutated input: the bytes, and what was done (for the corpus note). */
export interface FuzzCase {
  base: string;
  what: string;
  ext: Base['ext'];
  bytes: Buffer;
  companion?: Buffer;
}

/** Write a case as `<stem><ext>` in `dir` (a guest dump's debug.vmem beside it); returns the path to open. */
export function writeCase(dir: string, stem: string, c: FuzzCase): string {
  const file = path.join(dir, stem + c.ext);
  fs.writeFileSync(file, c.bytes);
  const vmem = path.join(dir, `${stem}.vmem`);
  if (c.companion) fs.writeFileSync(vmem, c.companion);
  else fs.rmSync(vmem, { force: true });
  return file;
}

/**
 * Guest dumps have no tags: their mutations hit the header fields crash checks (version, vCPU
 * count, memory size, hole count and holes), the vCPU records, and the size of debug.vmem.
 */
function mutateGuest(base: Base, rng: Rng): FuzzCase {
  const bytes = Buffer.from(base.bytes);
  const c = (what: string, b: Buffer = bytes, companion: Buffer | undefined = base.companion): FuzzCase => ({ base: base.name, what, ext: base.ext, bytes: b, companion });
  switch (rng.int(6)) {
    case 0: {
      const at = rng.int(Math.min(bytes.length, 128));
      bytes[at] = (bytes[at] as number) ^ (1 << rng.int(8));
      return c(`bit flip at ${at}`);
    }
    case 1: {
      const cut = Math.max(0, rng.pick(base.boundaries) + rng.int(3) - 1);
      return c(`truncated at ${cut}`, bytes.subarray(0, cut));
    }
    case 2: {
      const count = rng.pick([0, 1, 3, 4096, 4097, 0x7fffffff, 0xffffffff]);
      bytes.writeUInt32LE(count >>> 0, 4);
      return c(`vCPU count ${count}`);
    }
    case 3: {
      // Absurd values in the main-memory fields and holes (u32 or u64 slots alike).
      const at = 8 + rng.int(80);
      patch64(bytes, at, rng.pick(ABSURD));
      return c(`absurd u64 at ${at}`);
    }
    case 4: {
      const at = rng.pick([16, 20, 24, 28, 32, 36]);
      bytes.writeUInt32LE(rng.pick([3, 1000, 0xffffffff]), at);
      return c(`hole count or field at ${at}`);
    }
    default: {
      // debug.vmem of the wrong size: shorter, longer, empty, or missing.
      const mem = base.companion ?? Buffer.alloc(0);
      const choice = rng.int(4);
      const sized = [mem.subarray(0, rng.int(mem.length)), Buffer.concat([mem, Buffer.alloc(1 + rng.int(8192))]), Buffer.alloc(0)][choice];
      return c(`debug.vmem ${['cut short', 'too long', 'empty', 'missing'][choice]}`, bytes, sized);
    }
  }
}

/** Sizes and offsets of every magnitude a damaged field can claim, up to and past 2^53. */
const ABSURD = [0, 1, 0x7fffffff, 0xffffffff, 2 ** 32, 2 ** 40, 2 ** 44, 2 ** 47, 2 ** 49, 2 ** 50, 2 ** 52, 2 ** 53 - 1, 2 ** 63, 2 ** 64 - 1];

function patch64(buf: Buffer, at: number, value: number): void {
  if (at + 8 <= buf.length) buf.writeBigUInt64LE(BigInt.asUintN(64, BigInt(value)), at);
}

/** Apply one mutation operator chosen by the generator. */
export function mutate(base: Base, rng: Rng): FuzzCase {
  if (base.ext === '.guest') return mutateGuest(base, rng);
  return { ...mutateCheckpoint(base, rng), ext: base.ext };
}

function mutateCheckpoint(base: Base, rng: Rng): Omit<FuzzCase, 'ext'> {
  const bytes = Buffer.from(base.bytes);
  const op = rng.int(8);
  switch (op) {
    case 0: {
      const n = 1 + rng.int(8);
      const limit = base.blob ? base.blob[0] : bytes.length;
      const at: number[] = [];
      for (let i = 0; i < n; i++) {
        const pos = rng.int(Math.max(1, Math.min(limit, bytes.length)));
        bytes[pos] = (bytes[pos] as number) ^ (1 << rng.int(8));
        at.push(pos);
      }
      return { base: base.name, what: `bit flips at ${at.join(',')}`, bytes };
    }
    case 1: {
      const b = rng.pick(base.boundaries);
      const cut = Math.max(0, Math.min(bytes.length, b + rng.int(3) - 1));
      return { base: base.name, what: `truncated at ${cut}`, bytes: bytes.subarray(0, cut) };
    }
    case 2: {
      const count = rng.pick([0, 1, 0xffff, 0x7fffffff, 0xffffffff, 10_000, 10_001, (bytes.length - 12) / 80 + 1]);
      bytes.writeUInt32LE(Math.floor(count) >>> 0, 8);
      return { base: base.name, what: `group count ${count}`, bytes };
    }
    case 3: {
      const entry = rng.pick(base.tableOffsets);
      const field = rng.int(2) === 0 ? 64 : 72;
      const value = rng.pick(ABSURD);
      patch64(bytes, entry + field, value);
      return { base: base.name, what: `group entry at ${entry}: ${field === 64 ? 'tagsOffset' : 'size'} = ${value}`, bytes };
    }
    case 4: {
      // Groups that overlap each other or the memory blob.
      const entry = rng.pick(base.tableOffsets);
      const other = rng.pick(base.tableOffsets);
      const target = base.blob && rng.int(2) === 0 ? base.blob[0] + rng.int(base.blob[1] - base.blob[0]) : Number(bytes.readBigUInt64LE(other + 64));
      patch64(bytes, entry + 64, target);
      if (rng.int(2) === 0) patch64(bytes, entry + 72, bytes.length);
      return { base: base.name, what: `group entry at ${entry} aimed at ${target}`, bytes };
    }
    case 5: {
      // Tag words with absurd flags: size fields 62/63 where an inline value was, index counts.
      const h = rng.pick(base.tagHeaders);
      if (h + 2 <= bytes.length) bytes[h] = rng.int(256);
      return { base: base.name, what: `tag word at ${h} flags ${bytes[h]}`, bytes };
    }
    case 6: {
      // Absurd numbers right after a tag name: block sizes, region values, padding lengths.
      const h = rng.pick(base.tagHeaders);
      const at = h + 2 + (bytes[h + 1] ?? 0) + rng.int(12);
      patch64(bytes, at, rng.pick(ABSURD));
      return { base: base.name, what: `absurd u64 at ${at}`, bytes };
    }
    default: {
      // Splice: a stretch of the file copied over another.
      const len = 1 + rng.int(256);
      const from = rng.int(Math.max(1, bytes.length - len));
      const to = rng.int(Math.max(1, bytes.length - len));
      Buffer.from(bytes.subarray(from, from + len)).copy(bytes, to);
      return { base: base.name, what: `spliced ${len} bytes from ${from} to ${to}`, bytes };
    }
  }
}

export interface Verdict {
  /** 'error' = a clean VmssError (exit 1); 'served' = metadata parsed (exit 0). */
  outcome: 'error' | 'served';
  message: string;
  ms: number;
}

/**
 * A watchdog for hangs, not a speed bound: a case takes milliseconds, and one still running after
 * a minute is stuck (an endless loop, a read that never returns), however busy the machine. How
 * much work a case may do is bounded by the parser's own caps (tags, sizes), which the suite tests.
 */
export const CASE_WATCHDOG_MS = 60_000;

/**
 * Run one file through everything `info` and the mount do, in process: open, render both info
 * forms, build the tree and read each file's head, tail and middle through the page cache.
 * Throws (a fuzz failure) on anything but a clean outcome.
 */
export async function checkFile(file: string): Promise<Verdict> {
  const t0 = Date.now();
  let snap;
  try {
    snap = openEvidence(file);
  } catch (err) {
    if (!(err instanceof VmssError)) throw new Error(`unexpected ${(err as Error).name}: ${(err as Error).message}`);
    if (err.message.includes('\n')) throw new Error(`multi-line error: ${JSON.stringify(err.message)}`);
    if (!err.message.includes(file)) throw new Error(`error does not name the file: ${err.message}`);
    return { outcome: 'error', message: err.message, ms: Date.now() - t0 };
  }
  try {
    snap.infoText(snap.warnings, { verbose: true });
    JSON.parse(snap.infoJsonText(snap.warnings));
    const cache = new PageCache({ maxBytes: 8 * 1024 * 1024 });
    const tree = buildTree(snap, cache);
    const buf = Buffer.alloc(64 * 1024);
    // Block tags by their file node: their bytes past the end of the snapshot file must read as zeros.
    // The tree lists groups and tags in file order (duplicates renamed, not dropped), so pair them by position.
    const blockEnds = new Map<Node, number>();
    const groupsDir = tree.lookup('/groups');
    const groupDirs = groupsDir?.kind === 'dir' ? [...groupsDir.children.values()] : [];
    const meta = snap.metaFile;
    (snap.checkpoint?.groups ?? []).forEach((g, i) => {
      const dir = groupDirs[i];
      const files = dir?.kind === 'dir' ? [...dir.children.values()] : [];
      g.tags.forEach((t, j) => {
        const node = files[j];
        if (t.block && node) blockEnds.set(node, meta.size - t.dataOffset);
      });
    });
    const visit = async (node: Node): Promise<void> => {
      if (Date.now() - t0 > CASE_WATCHDOG_MS) throw new Error(`still running after ${CASE_WATCHDOG_MS} ms: hung`);
      if (node.kind === 'dir') {
        for (const child of node.children.values()) await visit(child);
        return;
      }
      for (const pos of [0, Math.max(0, node.size - buf.length), Math.floor(node.size / 2)]) {
        const n = await node.read(buf, pos, buf.length);
        if (n !== Math.max(0, Math.min(buf.length, node.size - pos))) throw new Error(`short read: ${n} at ${pos} of ${node.size}`);
        const stored = blockEnds.get(node);
        if (stored !== undefined && pos + n > stored) {
          const from = Math.max(0, stored - pos);
          if (buf.subarray(from, n).some((b) => b !== 0)) throw new Error(`bytes past the end of the file read as data, not zeros, at ${pos + from} of a block tag`);
        }
      }
    };
    await visit(tree.root);
  } finally {
    snap.close();
  }
  const ms = Date.now() - t0;
  if (ms > CASE_WATCHDOG_MS) throw new Error(`took ${ms} ms: hung`);
  return { outcome: 'served', message: '', ms };
}

/** The cases a seed produces, in order: base files round-robin, one mutation each. */
export function* fuzzCases(bases: Base[], seed: number, count: number): Generator<FuzzCase> {
  const rng = new Rng(seed);
  for (let i = 0; i < count; i++) yield mutate(bases[i % bases.length] as Base, rng);
}

/** Keep a failing input as a regression case: test/corpus/<sha>.vmss and a note beside it. */
export function saveToCorpus(corpusDir: string, c: FuzzCase, failure: string): string {
  fs.mkdirSync(corpusDir, { recursive: true });
  const id = createHash('sha256').update(c.bytes).update(c.companion ?? Buffer.alloc(0)).digest('hex').slice(0, 16);
  const file = writeCase(corpusDir, id, c);
  fs.writeFileSync(path.join(corpusDir, `${id}.txt`), `base: ${c.base}\nmutation: ${c.what}\nfailure: ${failure}\n`);
  return file;
}

/** A failed source-layer input, kept as `layers/<id>.bin` (with its key in the note) to look at by hand. */
function saveLayerCase(corpusDir: string, c: LayerCase & { key: Buffer | null }, failure: string): string {
  const dir = path.join(corpusDir, 'layers');
  fs.mkdirSync(dir, { recursive: true });
  const id = createHash('sha256').update(c.bytes).digest('hex').slice(0, 16);
  const file = path.join(dir, `${id}.bin`);
  fs.writeFileSync(file, c.bytes);
  fs.writeFileSync(path.join(dir, `${id}.txt`), `base: ${c.base}\nmutation: ${c.what}\nkey: ${c.key?.toString('hex') ?? 'none'}\nfailure: ${failure}\n`);
  return file;
}

/** RSS ceiling for any one input: bad input never costs unbounded memory. */
export const RSS_LIMIT = 200 * 1024 * 1024;

/**
 * RSS of this long-running process, measured after a collection when it looks high: garbage left
 * by earlier cases is not the current case's footprint (run with --expose-gc, as `make fuzz` does).
 */
function residentAfterCollection(): number {
  let rss = process.memoryUsage().rss;
  const gc = (globalThis as { gc?: () => void }).gc;
  if (rss > RSS_LIMIT / 2 && gc) {
    gc();
    rss = process.memoryUsage().rss;
  }
  return rss;
}

// ---------------------------------------------------------------------------------------------
// the decoding layers: encrypted containers and compressed memory streams

/** A layer input to mutate: a compressed stream, plain or inside an encrypted container. */
export interface LayerBase {
  name: string;
  bytes: Buffer;
  /** Set for an encrypted container: its key. */
  key: Buffer | null;
  /** Offsets of headers and their fields (block headers; the container's header fields). */
  boundaries: number[];
  /** Bytes of memory the checkpoint's memory group needs: what the stream decodes to, unmutated. */
  need: number;
  /** Offsets of the block headers of a plain stream (empty inside an encrypted container). */
  blocks: number[];
}

const FUZZ_KEY = Buffer.alloc(32, 0x5a);

/** A compressed stream of guest-like memory in small blocks, and the same inside an encobj container. */
export function makeLayerBases(): LayerBase[] {
  const mem = guestLikeMemory(96);
  const enc = new FastLzStream();
  const parts: Buffer[] = [];
  const boundaries: number[] = [];
  const blocks: number[] = [];
  let at = 0;
  for (let o = 0, k = 0; o < mem.length; o += 40000, k++) {
    const b = enc.encodeBlock(mem.subarray(o, Math.min(mem.length, o + 40000)), { raw: k === 3 });
    boundaries.push(at, at + 4, at + 8, at + 12, at + 16);
    blocks.push(at);
    at += b.length;
    parts.push(b);
  }
  const stream = Buffer.concat(parts);
  // The container: header, then pages of 4064 data bytes, IV and MAC.
  const pages = Math.ceil(stream.length / 4064);
  const box = Buffer.alloc(4096 + pages * 4096);
  box.writeUInt32LE(0x8943dd9e, 0);
  box.writeUInt32LE(2, 4);
  box.writeUInt32LE(4064, 8);
  box.writeUInt32LE(16, 12);
  box.writeUInt32LE(16, 16);
  box.writeBigUInt64LE(BigInt(stream.length), 0x18);
  for (let p = 0; p < pages; p++) {
    const iv = Buffer.alloc(16, p & 0xff);
    const c = crypto.createCipheriv('aes-256-cbc', FUZZ_KEY, iv);
    c.setAutoPadding(false);
    const page = Buffer.alloc(4064);
    stream.copy(page, 0, p * 4064, (p + 1) * 4064);
    Buffer.concat([c.update(page), c.final()]).copy(box, 4096 + p * 4096);
    iv.copy(box, 4096 + p * 4096 + 4064);
  }
  return [
    { name: 'compressed-stream', bytes: stream, key: null, boundaries, need: mem.length, blocks },
    { name: 'encobj-compressed', bytes: box, key: FUZZ_KEY, boundaries: [0, 4, 8, 12, 16, 0x18, 4096, 4096 + 4064, 8192], need: mem.length, blocks: [] },
  ];
}

/** A mutated input of the source layers alone (no file name, no companion), and the memory size its checkpoint would need. */
export type LayerCase = Pick<FuzzCase, 'base' | 'what' | 'bytes'> & { need: number };

/**
 * An intact chain of headers that decodes to another size than the memory group needs: the last
 * block dropped, the first repeated, or the last one's size field changed (within what a header
 * may say); or, where the stream cannot be edited (encrypted), the size needed changed. Such a
 * file is plain memory (container.ts), and no other mutation is likely to hit that rule exactly.
 */
export function resizeLayer(base: LayerBase, rng: Rng): LayerCase {
  const bytes = base.bytes;
  const last = base.blocks[base.blocks.length - 1];
  const step = 4096 * (1 + rng.int(4));
  const choice = last === undefined ? 3 : rng.int(4);
  if (last === undefined || choice === 3) {
    const need = rng.int(2) === 0 ? base.need + step : base.need - step;
    return { base: base.name, what: `memory group needs ${need} bytes, not ${base.need}`, bytes: Buffer.from(bytes), need };
  }
  if (choice === 0) return { base: base.name, what: 'last block dropped', bytes: Buffer.from(bytes.subarray(0, last)), need: base.need };
  // Only the last block may be shorter than the first: a longer chain repeats the first.
  if (choice === 1) return { base: base.name, what: 'first block repeated', bytes: Buffer.concat([bytes.subarray(0, base.blocks[1]), bytes]), need: base.need };
  // The last block's size field: never below its stored bytes, never above the first block's.
  const out = Buffer.from(bytes);
  const size = out.readUInt32LE(last);
  const stored = out.readUInt32LE(last + 8);
  const first = out.readUInt32LE(0);
  const other = stored + rng.int(first - stored + 1);
  out.writeUInt32LE(other === size ? (size > stored ? size - 1 : size + 1) : other, last);
  return { base: base.name, what: `last block's size ${size} -> ${out.readUInt32LE(last)} (header at ${last})`, bytes: out, need: base.need };
}

/** One mutation of a layer input. */
export function mutateLayer(base: LayerBase, rng: Rng): LayerCase {
  const bytes = Buffer.from(base.bytes);
  const at = rng.int(4) === 0 ? rng.int(bytes.length) : rng.pick(base.boundaries);
  const need = base.need;
  switch (rng.int(6)) {
    case 0: {
      const len = rng.int(bytes.length);
      return { base: base.name, what: `truncated to ${len}`, bytes: bytes.subarray(0, len), need };
    }
    case 1: {
      const v = rng.pick(ABSURD);
      if (at + 4 <= bytes.length) bytes.writeUInt32LE(v % 2 ** 32, at);
      return { base: base.name, what: `u32 ${v % 2 ** 32} at ${at}`, bytes, need };
    }
    case 2: {
      const v = rng.pick(ABSURD);
      if (at + 8 <= bytes.length) patch64(bytes, at, v);
      return { base: base.name, what: `u64 ${v} at ${at}`, bytes, need };
    }
    case 3: {
      const n = 1 + rng.int(16);
      for (let i = 0; i < n; i++) bytes[rng.int(bytes.length)] ^= 1 + rng.int(255);
      return { base: base.name, what: `${n} random bytes flipped`, bytes, need };
    }
    case 4:
      return resizeLayer(base, rng);
    default: {
      const len = 1 + rng.int(4096);
      const from = rng.int(Math.max(1, bytes.length - len));
      const to = rng.int(Math.max(1, bytes.length - len));
      Buffer.from(bytes.subarray(from, from + len)).copy(bytes, to);
      return { base: base.name, what: `spliced ${len} bytes from ${from} to ${to}`, bytes, need };
    }
  }
}

/** The layer cases a seed produces: bases round-robin, one mutation each. */
export function* layerCases(bases: LayerBase[], seed: number, count: number): Generator<LayerCase & { key: Buffer | null }> {
  const rng = new Rng(seed);
  for (let i = 0; i < count; i++) {
    const b = bases[i % bases.length] as LayerBase;
    yield { ...mutateLayer(b, rng), key: b.key };
  }
}

/**
 * Open the layers over `bytes` as vmssfs would and read all of the result, in order and out of
 * order, sync and async: every read returns bytes or fails with EIO, opening fails only with a
 * one-line VmssError, and the whole case stays within the time limit. A mutated ciphertext page
 * decrypts to other bytes that nothing can catch (the per-page MAC's algorithm is not public, so
 * integrity is not verified): such cases are checked for a clean outcome, not for found damage.
 * With `need` (what the memory group needs), a stream is taken as compressed only as
 * container.ts promises: an intact chain that decodes to `need` bytes, or one cut short; anything
 * else is read as plain memory ('plain'), with one line saying why when it looked compressed.
 */
export async function checkLayers(name: string, bytes: Buffer, key: Buffer | null, need: number | null = null): Promise<'served' | 'plain' | 'error'> {
  const t0 = Date.now();
  let src: Source = new BufferSource(name, bytes, true);
  let r: Recognition;
  try {
    if (key) src = EncObjSource.open(src, key);
    r = recogniseContainer(src, need);
    if (r.compressed) src = new BlockStreamSource(src, { index: r.index });
  } catch (err) {
    if (err instanceof VmssError && !err.message.includes('\n') && err.message.includes(name)) return 'error';
    throw new Error(`unexpected ${(err as Error).name}: ${(err as Error).message}`);
  }
  if (r.compressed) {
    const ix = r.index;
    if (ix.stop !== null && !ix.cut) throw new Error(`taken as compressed, but its chain stops before the end: ${ix.stop}`);
    if (!ix.cut && need !== null && ix.decodedSize !== need) throw new Error(`taken as compressed, but it decodes to ${ix.decodedSize} bytes where the memory group needs ${need}`);
  } else if (r.why?.includes('\n')) {
    throw new Error(`read as plain memory, but why takes more than a line: ${r.why}`);
  }
  const check = (err: unknown): void => {
    const e = err as NodeJS.ErrnoException;
    if (e?.code !== 'EIO' || !e.message.includes(name)) throw new Error(`read failed without EIO naming the file: ${e?.message ?? String(err)}`);
  };
  const buf = Buffer.alloc(16 * 1024);
  const size = Math.min(src.size, 64 * 1024 * 1024);
  const positions = [...Array(Math.ceil(size / buf.length)).keys()].map((i) => i * buf.length);
  for (const pos of [...positions, ...positions.reverse()]) {
    if (Date.now() - t0 > CASE_WATCHDOG_MS) throw new Error(`took over ${CASE_WATCHDOG_MS} ms`);
    try {
      await src.read(buf, 0, buf.length, pos);
    } catch (err) {
      check(err);
    }
    try {
      src.readAtSync(buf.subarray(0, 100), pos + 7);
    } catch (err) {
      check(err);
    }
  }
  src.close();
  return r.compressed ? 'served' : 'plain';
}

/**
 * The native decoder against the JavaScript one on damaged FastLZ blocks (test/kit/fastlz-cases.ts),
 * alternately sync and on the thread pool: the same bytes, or the same failure. Returns the failures.
 */
export async function fuzzDecoder(seed: number, count: number): Promise<number> {
  const decoder = decoderInUse();
  let failures = 0;
  let i = 0;
  for (const c of damagedBlocks(new Rng(seed), count, intactBlocks().blocks)) {
    const d = difference(decodeJs(c), await decodeNative(c, i++ % 2 === 1));
    if (d === null) continue;
    failures++;
    if (failures <= 20) console.log(`FAIL decoder ${c.what}: ${d}`);
  }
  console.log(`decoder: ${count} damaged blocks, ${decoder} against JavaScript, ${failures} differed`);
  if (!decoder.startsWith('native')) console.log('decoder: the native decoder is not loaded: nothing was compared');
  return failures;
}

/** How one index fared on a stream: where its pass stopped and why, then every byte it serves. */
async function seekOutcome(idx: SeekIndex | NativeSeekIndex, blocks: readonly BlockEntry[], bytes: Buffer): Promise<string[]> {
  await idx.build();
  const out = [`indexed ${idx.indexed}, done ${idx.done}, failure ${idx.failure}`];
  const chunk = 9000;
  for (let k = 0; k < idx.indexed; k++) {
    const b = blocks[k] as BlockEntry;
    if (b.raw) continue;
    const stored = (off: number, len: number): Buffer => bytes.subarray(b.dataOffset + off, b.dataOffset + off + len);
    for (let w = 0; w < b.size; w += chunk) {
      const n = Math.min(chunk, b.size - w);
      const dst = Buffer.alloc(n);
      try {
        idx.readSync(k, b.start + w, n, dst, 0, stored);
        out.push(createHash('sha1').update(dst).digest('hex'));
      } catch (err) {
        if (!(err instanceof FastLzError)) throw err;
        out.push(`damaged: ${err.message}`);
      }
    }
  }
  return out;
}

/**
 * The C seek index against the JavaScript one on mutated compressed streams (makeLayerBases'
 * plain stream): the pass stops at the same block for the same reason, and every read of the
 * blocks it indexed gives the same bytes, with a roomy allowance and a tiny one (points merged).
 * Returns the failures.
 */
export async function fuzzSeekIndex(seed: number, count: number, log: (line: string) => void = console.log): Promise<number> {
  const base = makeLayerBases().find((b) => b.key === null) as LayerBase;
  let failures = 0;
  let compared = 0;
  let i = 0;
  for (const c of layerCases([base], seed, count)) {
    const allowance = i++ % 2 === 0 ? 1 << 20 : 2048;
    let blocks: BlockEntry[];
    try {
      blocks = indexContainer(new BufferSource('case.vmem', c.bytes)).blocks;
    } catch {
      continue;
    }
    if (blocks.length === 0) continue;
    const host: IndexHost = {
      blocks,
      allowance,
      readRaw: (k) => Promise.resolve(Buffer.from(c.bytes.subarray(blocks[k]!.dataOffset, blocks[k]!.dataOffset + blocks[k]!.stored))),
      reserve: () => undefined,
    };
    const native = NativeSeekIndex.create(host);
    if (!native) continue; // a table the C index refuses (the JavaScript index serves it alone)
    compared++;
    let why: string | null = null;
    try {
      const [a, b] = [await seekOutcome(native, blocks, c.bytes), await seekOutcome(new SeekIndex(host), blocks, c.bytes)];
      const d = a.findIndex((x, j) => x !== b[j]);
      if (d >= 0 || a.length !== b.length) why = `C said ${a[d] ?? '(nothing)'}, JavaScript ${b[d] ?? '(nothing)'}`;
    } catch (err) {
      why = (err as Error).message;
    }
    if (why === null) continue;
    failures++;
    if (failures <= 20) log(`FAIL seek index ${c.what} (allowance ${allowance}): ${why}`);
  }
  log(`seek index: ${count} mutated streams, ${compared} indexed by C and JavaScript, ${failures} differed`);
  if (!seekAddonLoaded()) log('seek index: the C index is not loaded: nothing was compared');
  return failures;
}

function seekAddonLoaded(): boolean {
  return NativeSeekIndex.create({ blocks: [{ dataOffset: 0, stored: 1, start: 0, size: 1, raw: true }], allowance: 0, readRaw: () => Promise.resolve(Buffer.alloc(1)), reserve: () => undefined }) !== null;
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const get = (flag: string, dflt: number): number => {
    const i = args.indexOf(flag);
    return i >= 0 ? Number(args[i + 1]) : dflt;
  };
  const iterations = get('--iterations', 2000);
  const seed = get('--seed', 1);
  const corpus = path.resolve(__dirname, '..', '..', 'test', 'corpus');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmssfs-fuzz-'));
  try {
    const bases = makeBases(dir);
    let failures = 0;
    let errors = 0;
    let slowest = 0;
    let peakRss = 0;
    let i = 0;
    for (const c of fuzzCases(bases, seed, iterations)) {
      i++;
      const input = writeCase(dir, 'case', c);
      try {
        const v = await checkFile(input);
        if (v.outcome === 'error') errors++;
        slowest = Math.max(slowest, v.ms);
        const rss = residentAfterCollection();
        peakRss = Math.max(peakRss, rss);
        if (rss > RSS_LIMIT) throw new Error(`RSS ${Math.round(rss / 1048576)} MiB`);
      } catch (err) {
        failures++;
        const saved = saveToCorpus(corpus, c, (err as Error).message);
        console.log(`FAIL #${i} ${c.base}: ${c.what}: ${(err as Error).message} -> ${path.relative(process.cwd(), saved)}`);
      }
      if (i % 5000 === 0) console.log(`${i}/${iterations} cases, ${failures} failures`);
    }
    console.log(
      `fuzz: seed ${seed}, ${iterations} cases from ${bases.length} bases: ${iterations - errors} served, ${errors} refused with one-line errors; ` +
        `slowest ${slowest} ms, peak RSS ${Math.round(peakRss / 1048576)} MiB`,
    );
    // The decoding layers: a quarter as many cases again.
    const layerBases = makeLayerBases();
    let layerFailures = 0;
    let layerPlain = 0;
    const layerCount = Math.ceil(iterations / 4);
    for (const c of layerCases(layerBases, seed, layerCount)) {
      try {
        if ((await checkLayers('case.vmem', c.bytes, c.key, c.need)) === 'plain') layerPlain++;
        const rss = residentAfterCollection();
        peakRss = Math.max(peakRss, rss);
        if (rss > RSS_LIMIT) throw new Error(`RSS ${Math.round(rss / 1048576)} MiB`);
      } catch (err) {
        layerFailures++;
        const saved = saveLayerCase(corpus, c, (err as Error).message);
        console.log(`FAIL layer ${c.base}: ${c.what}: ${(err as Error).message} -> ${path.relative(process.cwd(), saved)}`);
      }
    }
    console.log(`layers: ${layerCount} cases (compressed streams, encrypted containers), ${layerPlain} read as plain memory, ${layerFailures} failed`);
    const decoderFailures = await fuzzDecoder(seed, Math.ceil(iterations / 2));
    const seekFailures = await fuzzSeekIndex(seed, Math.ceil(iterations / 4));
    console.log(`${iterations - failures} passed, ${failures} failed`);
    return failures + layerFailures + decoderFailures + seekFailures === 0 ? 0 : 1;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main().then((code) => process.exit(code), (err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
