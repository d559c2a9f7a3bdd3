import * as fs from 'node:fs';
import * as path from 'node:path';
import { VmssError } from './errors';
import { parseCheckpoint, findTag, type Checkpoint } from './format/checkpoint';
import { hex } from './format/header';
import { SourceFile } from './io/source';
import { buildRuns, missingRanges, SegmentMap, type MemoryBlob, type Run } from './runmap';

/** Guest-physical memory as served: runs into one memory file, holes between them. */
export interface PhysMem {
  /** Bytes of flat physical memory: the end of the highest run. */
  size: number;
  map: SegmentMap<Run>;
  /** The file the runs read from: the checkpoint itself, or the .vmem. */
  file: EvidenceFile;
}

/** What the layers above read an evidence file through: a SourceFile, or a pooled one opened on demand (VM folders). */
export type EvidenceFile = Pick<SourceFile, 'id' | 'name' | 'size' | 'mtime' | 'readsInPlace' | 'readAtSync' | 'read' | 'close' | 'basename'>;

/** A checkpoint opened for serving: parsed metadata plus, when it can be served, its physical memory. */
export interface Snapshot {
  checkpoint: Checkpoint;
  metaFile: EvidenceFile;
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
  /** How to open evidence files (default SourceFile.open); a VM folder passes its descriptor pool's. */
  openFile?: (path: string) => EvidenceFile;
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

/** Open and parse a snapshot given as .vmss, .vmsn or .vmem. Throws VmssError when the metadata is unusable. */
export function openSnapshot(arg: string, opts: OpenOptions = {}): Snapshot {
  const paths = resolvePaths(arg, opts);
  const openFile = opts.openFile ?? SourceFile.open;
  const metaFile = openFile(paths.meta);
  let memFile: EvidenceFile | null = null;
  try {
    const checkpoint = parseCheckpoint(metaFile);
    const warnings = [...checkpoint.warnings, ...paths.notes];
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
        memFile = openFile(vmemPath);
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
    return {
      checkpoint, metaFile, memoryPath: physmem ? memoryPath : null, physmem, physmemError, warnings,
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
