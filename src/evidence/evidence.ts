import type { CpuState } from '../format/cpu';
import type { Checkpoint } from '../format/checkpoint';
import type { Source } from '../io/source';
import type { Run } from '../format/regions';
import type { SegmentMap } from '../tree/segments';
import type { EncryptionInfo } from '../crypto/keyring';
import type { TextDoc } from './textdoc';

/** Guest-physical memory as served: runs into one memory file, holes between them. */
export interface PhysMem {
  /** Bytes of flat physical memory: the end of the highest run. */
  size: number;
  map: SegmentMap<Run>;
  /** The file the runs read from: the checkpoint itself, or the memory file beside it. */
  file: Source;
}

/**
 * What the tree, the views and the commands take from an opened piece of evidence, whichever
 * format it is: a VMware checkpoint (snapshot.ts) or an ESXi guest dump (guest.ts). Each format
 * answers for itself; the tree never asks which one it holds.
 */
export interface Evidence {
  /** The file the user named (or its metadata file): it dates the tree. */
  metaFile: Source;
  /** Path of the file the memory runs read from, when memory is served. */
  memoryPath: string | null;
  physmem: PhysMem | null;
  /** Why physical memory cannot be served, in words the user can act on (set when physmem is null). */
  physmemError: string | null;
  /** Everything read or assumed that the user should know: parse damage, truncation, guesses. */
  warnings: string[];
  /** Tag groups (groups/, config.vmx, screenshot.png); null for a format without tags. */
  checkpoint: Checkpoint | null;
  /** Each vCPU's registers, for physmem.elf and metadata.json. */
  cpuState(): CpuState;
  /** info.txt (`vmssfs info`), showing `warnings` as its warnings. */
  infoText(warnings: readonly string[], opts?: { verbose?: boolean }): string;
  /** metadata.json (`vmssfs info --json`), showing `warnings` as its warnings. */
  infoJsonText(warnings: readonly string[]): string;
  /**
   * The same two texts as documents made a unit at a time (textdoc.ts): what `vmssfs info` writes
   * out and the mount serves, so that a checkpoint at the tag cap is never held as one string.
   */
  infoTextDoc(warnings: readonly string[], opts?: { verbose?: boolean }): TextDoc;
  infoJsonDoc(warnings: readonly string[]): TextDoc;
  close(): void;
}

/** The files an opened piece of evidence reads: its metadata file, and its memory file when separate. */
export function evidenceFiles(e: Pick<Evidence, 'metaFile' | 'physmem'>): Source[] {
  return e.physmem && e.physmem.file !== e.metaFile ? [e.metaFile, e.physmem.file] : [e.metaFile];
}

/** A checkpoint opened for serving: parsed metadata plus, when it can be served, its physical memory. */
export interface Snapshot extends Evidence {
  checkpoint: Checkpoint;
  /** Set when a file had to be decrypted: how the key was found, and which files. Never a secret. */
  encryption: EncryptionSummary | null;
  /** Set when the memory file is VMware's compressed block container. */
  compression: CompressionSummary | null;
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
