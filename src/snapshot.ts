import * as fs from 'node:fs';
import * as path from 'node:path';
import { VmssError } from './errors';
import { parseCheckpoint, findTag, type Checkpoint } from './format/checkpoint';
import { hex } from './format/header';
import { ENCOBJ_MAGIC } from './io/encobj';
import { openSource, type KeySupplier, type OpenedSource } from './io/open';
import type { Source } from './io/source';
import type { EncryptionInfo } from './crypto/keyring';
import { buildRuns, missingRanges, SegmentMap, type MemoryBlob, type Run } from './runmap';

/** Guest-physical memory as served: runs into one memory file, holes between them. */
export interface PhysMem {
  /** Bytes of flat physical memory: the end of the highest run. */
  size: number;
  map: SegmentMap<Run>;
  /** The source the runs read from: the checkpoint itself, or the .vmem (decoded when it must be). */
  file: Source;
}

/** A checkpoint opened for serving: parsed metadata plus, when it can be served, its physical memory. */
export interface Snapshot {
  checkpoint: Checkpoint;
  metaFile: Source;
  /** Set when a file had to be decrypted: how the key was found, and which files. Never a secret. */
  encryption: EncryptionSummary | null;
  /** Set when the memory file is VMware's compressed block container. */
  compression: CompressionSummary | null;
  /** Path of the file the memory runs read from, when one was found. */
  memoryPath: string | null;
  physmem: PhysMem | null;
  /** Why physical memory cannot be served, in words the user can act on (set when physmem is null). */
  physmemError: string | null;
  /** Everything read or assumed that the user should know: parse damage, truncation, guesses. */
  warnings: string[];
  close(): void;
}

export interface OpenOptions {
  /** Explicit memory file (ESXi names it by a UUID, without the .vmem extension). */
  vmem?: string;
  /** Where an encrypted file's key comes from; without it an encrypted file is refused. */
  keys?: KeySupplier & { readonly info: EncryptionInfo | null };
}

export interface EncryptionSummary extends EncryptionInfo {
  /** The files that were decrypted. */
  files: string[];
}

export interface CompressionSummary {
  file: string;
  blocks: number;
  /** Bytes of the container its blocks occupy (headers included). */
  storedBytes: number;
  /** Bytes of memory they decompress to. */
  decompressedBytes: number;
}

const VMEM = /\.vmem$/i;

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
  if (!exists(arg)) throw new VmssError(`${arg}: cannot open: no such file`);
  const candidates = ['.vmss', '.vmsn'].map((e) => withExt(arg, e)).filter(exists);
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
 * The files of the snapshot `arg` that are encrypted (the metadata and its memory file), found
 * by their first bytes without opening anything else: what the mount command checks before it
 * starts its daemon, to ask for the password while it still has the terminal.
 */
export function encryptedFiles(arg: string, opts: OpenOptions = {}): string[] {
  const paths = resolvePaths(arg, opts);
  const candidates = [paths.meta, paths.vmem ?? withExt(paths.meta, '.vmem')];
  return candidates.filter((f) => {
    let fd: number | null = null;
    try {
      fd = fs.openSync(f, 'r');
      const b = Buffer.alloc(4);
      return fs.readSync(fd, b, 0, 4, 0) === 4 && b.readUInt32LE(0) === ENCOBJ_MAGIC;
    } catch {
      return false;
    } finally {
      if (fd !== null) fs.closeSync(fd);
    }
  });
}

/** Open and parse a snapshot given as .vmss, .vmsn or .vmem. Throws VmssError when the metadata is unusable. */
export function openSnapshot(arg: string, opts: OpenOptions = {}): Snapshot {
  const paths = resolvePaths(arg, opts);
  const keys = opts.keys ?? null;
  const meta = openSource(paths.meta, { keys, memory: false });
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

    const memoryTag = findTag(checkpoint, 'memory', 'Memory', [0, 0]);
    let blob: MemoryBlob | null = null;
    const siblingVmem = withExt(paths.meta, '.vmem');
    const vmemPath = paths.vmem ?? (memoryTag?.block ? null : exists(siblingVmem) ? siblingVmem : null);

    if (vmemPath !== null) {
      if (memoryTag?.block && paths.explicitVmem) {
        warnings.push(`the checkpoint holds its own memory/Memory[0][0] block; serving ${vmemPath} instead, ${opts.vmem !== undefined ? 'as --vmem asked' : 'as it was the file given'}`);
      }
      try {
        mem = openSource(vmemPath, { keys, memory: true });
        memFile = mem.source;
        if (mem.encrypted) decrypted.push(vmemPath);
        memoryPath = vmemPath;
        blob = { offset: 0, length: memFile.size, wholeFile: true };
      } catch (err) {
        physmemError = `memory file ${err instanceof VmssError ? err.message : vmemPath}`;
      }
    } else if (memoryTag?.block) {
      if (memoryTag.compressed) {
        physmemError = `memory/Memory[0][0] is a compressed block, and VMware's compression scheme is not public: physical memory cannot be served (the metadata is)`;
      } else {
        memFile = metaFile;
        memoryPath = metaFile.name;
        blob = { offset: memoryTag.dataOffset, length: memoryTag.size, wholeFile: false };
      }
    } else {
      physmemError = `no memory found: ${path.basename(paths.meta)} holds no memory/Memory[0][0] block and ${path.basename(siblingVmem)} is not beside it; give the memory file with --vmem FILE`;
    }

    if (blob && memFile) {
      const r = buildRuns(checkpoint, blob);
      if (!r.ok) {
        physmemError = `${r.error}: physical memory cannot be mapped (the metadata is served)`;
      } else {
        warnings.push(...r.notes);
        const map = new SegmentMap(r.runs);
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
    const info = keys?.info ?? null;
    const stream = physmem && mem?.stream ? mem.stream : null;
    return {
      checkpoint, metaFile, memoryPath: physmem ? memoryPath : null, physmem, physmemError, warnings,
      encryption: decrypted.length > 0 && info ? { ...info, files: decrypted } : null,
      compression: stream && memoryPath
        ? { file: memoryPath, blocks: stream.blocks.length, storedBytes: stream.storedSize, decompressedBytes: stream.decodedSize }
        : null,
      close: () => {
        metaFile.close();
        if (memFile && memFile !== metaFile) memFile.close();
      },
    };
  } catch (err) {
    metaFile.close();
    if (memFile && memFile !== metaFile) memFile.close();
    throw err;
  }
}

/** Parse a checkpoint; a decrypted file that is not one was most likely decrypted with the wrong key. */
function parseDecrypted(opened: OpenedSource): Checkpoint {
  try {
    return parseCheckpoint(opened.source);
  } catch (err) {
    if (opened.encrypted && err instanceof VmssError) {
      throw new VmssError(`${opened.source.name}: decrypted, it is not a VMware checkpoint: the key is wrong (check --key or --vmx)`);
    }
    throw err;
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
