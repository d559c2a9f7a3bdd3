import * as fs from 'node:fs';
import * as path from 'node:path';
import { VmssError, WrongKeyError } from '../errors';
import { parseCheckpoint, findGroup, findTag, tagUint, type Checkpoint } from '../format/checkpoint';
import { MAGICS } from '../format/header';
import { hex } from '../format/integers';
import { atimeWarning, SourceFile, type Source } from '../io/source';
import { encryptionSummary, type PhysMem, type Snapshot } from './evidence';
import { checkpointCpuState } from '../format/cpustate';
import { infoJsonDoc, infoJsonText, infoText, infoTextDoc } from './info';
import { buildRuns, expectedBlobSize, flatRuns, missingRanges, type MemoryBlob, type Run } from '../format/regions';
import { SegmentMap } from '../tree/segments';
import { tagLabel, type Tag } from '../format/tags';
import { ENCOBJ_MAGIC, isEncObjFile } from '../io/encobj';
import { openSource, type KeySupplier, type OpenedSource } from '../io/sources';
import type { EncryptionInfo } from '../crypto/keyring';
import type { CacheBudget } from '../cache/budget';
import { isUrl, shownUrl } from '../io/http-access';
import type { HttpClient } from '../io/http';

export interface OpenOptions {
  /** Explicit memory file (ESXi names it by a UUID, without the .vmem extension). */
  vmem?: string;
  /**
   * When the memory group is lost or damaged (the layout is unknown), serve the memory file as
   * flat memory from address 0 anyway: the user's explicit choice, reported as a warning.
   */
  assumeFlat?: boolean;
  /** How to open evidence files (default SourceFile.open); a VM folder passes its descriptor pool's. */
  openFile?: (path: string) => Source;
  /** Where an encrypted file's key comes from; without it an encrypted file is refused. */
  keys?: KeySupplier & { readonly info: EncryptionInfo | null };
  /**
   * The budget the decoding layers' caches (decoded blocks, decrypted pages) draw from: give
   * the page cache's, so that together they hold no more than --cache-size.
   */
  budget?: CacheBudget;
  /** How URLs (http://, https://) are reached: their full form, credentials and trust. */
  http?: HttpClient;
}

const VMEM = /\.vmem$/i;
const CHECKPOINT_EXTS = ['.vmss', '.vmsn', '.std'];

/**
 * With no sibling .vmem: the .vmem files of the snapshot's folder whose size is what the memory
 * group needs, leaving out any that sits beside another checkpoint (it is that one's memory).
 */
function sizedVmems(meta: string, size: number): string[] {
  const dir = path.dirname(meta);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .filter((n) => VMEM.test(n))
    .map((n) => path.join(dir, n))
    .filter((f) => !CHECKPOINT_EXTS.some((e) => withExt(f, e) !== meta && exists(withExt(f, e))))
    .filter((f) => {
      try {
        const st = fs.statSync(f);
        return st.isFile() && st.size === size;
      } catch {
        return false;
      }
    })
    .sort();
}

/**
 * A URL named (the snapshot, --vmem) is handled by its shown form from here on (no query string,
 * no credentials: it appears in messages, info.txt and metadata.json); the HTTP client knows the
 * full URL behind it, and behind a sibling found by changing its extension.
 */
function urlNames(arg: string, opts: OpenOptions): { arg: string; opts: OpenOptions } {
  if (!isUrl(arg) && !(opts.vmem !== undefined && isUrl(opts.vmem))) return { arg, opts };
  const http = opts.http;
  if (!http) throw new VmssError(`${shownUrl(arg)}: URLs need the HTTP options (internal: no client)`);
  const open = (p: string): Source => (isUrl(p) ? http.open(p) : (opts.openFile ?? SourceFile.open)(p));
  return {
    arg: isUrl(arg) ? shownUrl(arg) : arg,
    opts: { ...opts, vmem: opts.vmem !== undefined && isUrl(opts.vmem) ? shownUrl(opts.vmem) : opts.vmem, openFile: open },
  };
}

/** Whether `p` is there: a file, or a URL the server has. */
function fileExists(p: string, opts: OpenOptions): boolean {
  return isUrl(p) && opts.http ? opts.http.exists(p) : exists(p);
}

function exists(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

function withExt(p: string, ext: string): string {
  return p.replace(/\.[^./]*$/, '') + ext;
}

/**
 * Users point tools at either file of the pair. Given a .vmem, the metadata is the sibling .vmss
 * or .vmsn; given a .vmss/.vmsn without a Memory block, the memory is the sibling .vmem.
 */
function resolvePaths(arg: string, opts: OpenOptions): { meta: string; vmem: string | null; explicitVmem: boolean; notes: string[] } {
  const notes: string[] = [];
  if (opts.vmem !== undefined) return { meta: arg, vmem: opts.vmem, explicitVmem: true, notes };
  if (!VMEM.test(arg)) return { meta: arg, vmem: null, explicitVmem: false, notes };
  if (!fileExists(arg, opts)) throw new VmssError(`${arg}: cannot open: no such file`);
  // .std: the suspended state of older products, the same format as a .vmss.
  const candidates = CHECKPOINT_EXTS.map((e) => withExt(arg, e)).filter((p) => fileExists(p, opts));
  const meta = candidates[0];
  if (!meta) {
    throw new VmssError(
      `${arg}: a raw .vmem holds only memory pages; its metadata ${path.basename(withExt(arg, '.vmss'))} or ${path.basename(withExt(arg, '.vmsn'))} was not found beside it (give the .vmss/.vmsn, with --vmem ${arg})`,
    );
  }
  if (candidates.length > 1) notes.push(`both ${candidates.map((c) => path.basename(c)).join(' and ')} sit beside ${path.basename(arg)}; used ${path.basename(meta)}`);
  return { meta, vmem: arg, explicitVmem: true, notes };
}

/**
 * `memory/Memory` without indices, taken only when no region tag says otherwise (as Volatility 2
 * does). `regionsCount` = 0 is no region, as its absence is.
 */
function plainMemoryTag(cp: Checkpoint): Tag | undefined {
  const mem = findGroup(cp, 'memory');
  if (!mem) return undefined;
  const regions = (t: Tag): boolean => /^region(PPN|Size|PageNum)$/.test(t.name) || (t.name === 'regionsCount' && tagUint(t) !== 0);
  if (mem.tags.some(regions)) return undefined;
  return mem.tags.find((t) => t.name === 'Memory' && t.indices.length === 0 && t.block);
}

/**
 * The group's one `Memory` block under other indices (`Memory[0]`): the format gives the block
 * no other meaning, so when it is the only one it holds the guest's pages (the regions, if any,
 * index into it). Two or more such blocks are not guessed between.
 */
function otherMemoryTag(cp: Checkpoint): Tag | undefined {
  const blocks = findGroup(cp, 'memory')?.tags.filter((t) => t.name === 'Memory' && t.block) ?? [];
  return blocks.length === 1 ? blocks[0] : undefined;
}

/**
 * The files of the snapshot `arg` that are encrypted (the metadata and its memory file), found
 * by their first bytes without opening anything else: what the mount command checks before it
 * starts its daemon, to ask for the password while it still has the terminal.
 */
export function encryptedFiles(given: string, givenOpts: OpenOptions = {}): string[] {
  const { arg, opts } = urlNames(given, givenOpts);
  const paths = resolvePaths(arg, opts);
  const candidates = [paths.meta, paths.vmem ?? withExt(paths.meta, '.vmem')];
  return candidates.filter((p) => (isUrl(p) ? fileExists(p, opts) && isEncObjSource((opts.openFile as (p: string) => Source)(p)) : isEncObjFile(p)));
}

function isEncObjSource(src: Source): boolean {
  try {
    const magic = Buffer.alloc(4);
    return src.readAtSync(magic, 0) === 4 && magic.readUInt32LE(0) === ENCOBJ_MAGIC;
  } finally {
    src.close();
  }
}

/** Open and parse a snapshot given as .vmss, .vmsn or .vmem (a path, or an http(s) URL). Throws VmssError when the metadata is unusable. */
export function openSnapshot(given: string, givenOpts: OpenOptions = {}): Snapshot {
  const { arg, opts } = urlNames(given, givenOpts);
  const paths = resolvePaths(arg, opts);
  const keys = opts.keys ?? null;
  const meta = openSource(paths.meta, { keys, memory: false, openFile: opts.openFile, budget: opts.budget });
  const metaFile = meta.source;
  const decrypted: string[] = meta.encrypted ? [paths.meta] : [];
  let mem: OpenedSource | null = null;
  let memFile: Source | null = null;
  try {
    const checkpoint = parseDecrypted(meta);
    const warnings = [...damageNotes(metaFile), ...checkpoint.warnings, ...paths.notes];
    let physmem: PhysMem | null = null;
    let physmemError: string | null = null;
    let memoryPath: string | null = null;

    // Older single-file checkpoints without regions store a plain `Memory` tag with no indices.
    const memoryTag = findTag(checkpoint, 'memory', 'Memory', [0, 0]) ?? plainMemoryTag(checkpoint) ?? otherMemoryTag(checkpoint);
    const memoryLabel = memoryTag ? `memory/${tagLabel(memoryTag)}` : 'memory/Memory[0][0]';
    let blob: MemoryBlob | null = null;
    const siblingVmem = withExt(paths.meta, '.vmem');
    let vmemPath = paths.vmem ?? (memoryTag?.block ? null : fileExists(siblingVmem, opts) ? siblingVmem : null);
    let noMemory = `no memory found: ${path.basename(paths.meta)} holds no memory/Memory[0][0] block and ${path.basename(siblingVmem)} is not beside it; give the memory file with --vmem FILE`;
    if (vmemPath === null && !memoryTag?.block && !isUrl(paths.meta)) {
      // Memory files named otherwise: the one .vmem of the folder whose size fits.
      const need = expectedBlobSize(checkpoint);
      const found = need === null ? [] : sizedVmems(paths.meta, need);
      if (found.length === 1) {
        vmemPath = found[0] as string;
        warnings.push(`memory file: ${vmemPath} (${path.basename(siblingVmem)} is not beside ${path.basename(paths.meta)}; this is the one .vmem in its folder of the size the memory group needs, ${need} bytes)`);
      } else if (found.length > 1) {
        noMemory = `no memory file chosen: ${path.basename(siblingVmem)} is not beside ${path.basename(paths.meta)}, and ${found.length} .vmem files in its folder have the size the memory group needs (${need} bytes): ${found.map((f) => path.basename(f)).join(', ')}; give the right one with --vmem FILE`;
      }
    }

    if (vmemPath !== null) {
      if (memoryTag?.block && paths.explicitVmem) {
        warnings.push(`the checkpoint holds its own ${memoryLabel} block; serving ${vmemPath} instead, ${opts.vmem !== undefined ? 'as --vmem asked' : 'as it was the file given'}`);
      }
      try {
        mem = openSource(vmemPath, { keys, memory: true, memorySize: expectedBlobSize(checkpoint), openFile: opts.openFile, budget: opts.budget });
        memFile = mem.source;
        warnings.push(...mem.notes);
        if (mem.encrypted) decrypted.push(vmemPath);
        memoryPath = vmemPath;
        blob = { offset: 0, length: memFile.size, wholeFile: true };
      } catch (err) {
        // A memory file the user named and that cannot be opened is a mistake to stop on, not a
        // mount without memory; a sibling found by its name only is reported and the metadata served.
        if (opts.vmem !== undefined && err instanceof VmssError) throw new VmssError(`${err.message} (the --vmem memory file)`);
        // A server that has the file but will not serve it (refused, ignores ranges) is a fault to stop on.
        if (isUrl(vmemPath) && err instanceof VmssError) throw err;
        physmemError = `memory file ${err instanceof VmssError ? err.message : vmemPath}`;
      }
    } else if (memoryTag?.block) {
      if (memoryTag.compressed) {
        physmemError = `${memoryLabel} is a compressed block, and VMware's compression scheme is not public: physical memory cannot be served (the metadata is)`;
      } else {
        memFile = metaFile;
        memoryPath = metaFile.name;
        blob = { offset: memoryTag.dataOffset, length: memoryTag.size, wholeFile: false };
      }
    } else {
      physmemError = noMemory;
    }

    if (blob && memFile) {
      const r = buildRuns(checkpoint, blob);
      let runs: Run[] | null = null;
      if (r.ok) {
        warnings.push(...r.notes);
        runs = r.runs;
      } else if (r.layoutUnknown && opts.assumeFlat) {
        warnings.push(`${r.error}: the layout of guest memory is unknown; --assume-flat serves ${memFile.name} as memory from address 0, as asked (pages above any hole in the guest's memory map sit at the wrong addresses)`);
        runs = flatRuns(blob);
      } else if (r.layoutUnknown) {
        physmemError = `${r.error}: the layout of guest memory is unknown, so physical memory is not served (the metadata is); give --assume-flat to serve ${memFile.name} as memory from address 0 anyway (pages above any hole would sit at the wrong addresses)`;
      } else {
        physmemError = `${r.error}: physical memory cannot be mapped (the metadata is served)`;
      }
      if (runs) {
        const map = new SegmentMap(runs);
        physmem = { size: map.end, map, file: memFile };
        // Memory past a broken chain of compressed blocks exists but cannot be decoded: EIO there.
        if (mem?.stream) mem.stream.coverDamaged(map.segments.reduce((a, m) => Math.max(a, m.fileOffset + m.length), 0));
        warnings.push(...damagedPhysical(memFile, map));
        for (const m of missingRanges(map.segments, memFile.size)) {
          warnings.push(
            `guest-physical ${hex(m.start)}-${hex(m.start + m.length)} (${m.length} bytes) lies beyond the end of ${memFile.name} (${memFile.size} bytes): truncated copy; it reads as zeros`,
          );
        }
      }
    }
    if (physmemError !== null && memFile && memFile !== metaFile) {
      memFile.close();
      memFile = null;
    }
    for (const f of memFile && memFile !== metaFile ? [metaFile, memFile] : [metaFile]) {
      const w = atimeWarning(f);
      if (w) warnings.push(w);
    }
    const info = keys?.info ?? null;
    const stream = physmem && mem?.stream ? mem.stream : null;
    let cpu: ReturnType<typeof checkpointCpuState> | null = null;
    const snap: Snapshot = {
      checkpoint, metaFile, memoryPath: physmem ? memoryPath : null, physmem, physmemError, warnings,
      encryption: decrypted.length > 0 && info ? encryptionSummary(info, decrypted) : null,
      compression: stream && memoryPath
        ? { file: memoryPath, blocks: stream.blocks.length, storedBytes: stream.storedSize, decompressedBytes: stream.decodedSize }
        : null,
      // Read once: metadata.json is made again each time it is read, and a URL's metadata must be
      // read at open only (its synchronous reads wait on the server), never under a FUSE read.
      cpuState: () => (cpu ??= checkpointCpuState(checkpoint, metaFile)),
      infoText: (shown, o) => infoText({ ...snap, warnings: [...shown] }, o),
      infoJsonText: (shown) => infoJsonText({ ...snap, warnings: [...shown] }),
      infoTextDoc: (shown, o) => infoTextDoc({ ...snap, warnings: [...shown] }, o),
      infoJsonDoc: (shown) => infoJsonDoc({ ...snap, warnings: [...shown] }),
      close: () => {
        metaFile.close();
        if (memFile && memFile !== metaFile) memFile.close();
      },
    };
    return snap;
  } catch (err) {
    metaFile.close();
    if (memFile && memFile !== metaFile) memFile.close();
    throw err;
  }
}

/**
 * Parse a checkpoint. A decrypted file that is not one was decrypted with the wrong key, unless
 * it is cut short: what decides is its first page, which starts with a checkpoint's magic under
 * the right key; without that page the key cannot be told right or wrong.
 */
function parseDecrypted(opened: OpenedSource): Checkpoint {
  try {
    return parseCheckpoint(opened.source);
  } catch (err) {
    if (!opened.encrypted || !(err instanceof VmssError)) throw err;
    const src = opened.source;
    const head = Buffer.alloc(4);
    const cut = src.damaged.find((d) => d.start === 0);
    if (src.readAtSync(head, 0) < 4 && cut) {
      throw new VmssError(`${src.name}: cut short: ${cut.why}; with no encrypted page left to decrypt, neither the checkpoint nor the key can be read`);
    }
    if (MAGICS.has(head.readUInt32LE(0))) {
      // The key is right: what failed is the file, and its damage is the likelier cause.
      const damage = src.damaged.map((d) => d.why).join('; ');
      throw new VmssError(damage ? `${err.message} (${src.name}: ${damage})` : err.message);
    }
    throw new WrongKeyError(`${src.name}: decrypted, it is not a VMware checkpoint: the key is wrong (check --key or --vmx)`, src.name);
  }
}

/** The damage a source found at open, as warnings (for the metadata file, whose bytes are parsed). */
function damageNotes(src: Source): string[] {
  return src.damaged.map((d) => `${src.name}: ${d.why}`);
}

/**
 * The memory file's damaged ranges, as guest-physical ranges the analyst can look up: reads
 * there fail with EIO.
 */
function damagedPhysical(src: Source, map: SegmentMap<Run>): string[] {
  const out: string[] = [];
  for (const d of src.damaged) {
    let hit = false;
    for (const r of map.segments) {
      const s = Math.max(d.start, r.fileOffset);
      const e = Math.min(d.end, r.fileOffset + r.length);
      if (s >= e) continue;
      hit = true;
      const p = r.start + (s - r.fileOffset);
      out.push(`guest-physical ${hex(p)}-${hex(p + (e - s))} (${e - s} bytes) cannot be read from ${src.name}: ${d.why}; reads there fail with EIO`);
    }
    if (!hit) out.push(`${src.name}: ${d.why}`);
  }
  return out;
}
