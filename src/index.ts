/**
 * vmssfs as a library: the layers the CLI and the mount are built from, each usable alone.
 * bytes → format (parseCheckpoint) → run map (openSnapshot's physmem) → page cache → tree.
 */
export { VmssError } from './errors';
export { SourceFile, BufferSource, type RandomAccess, type Source } from './io/source';
export { openSource, type KeySupplier } from './io/sources';
export { EncObjSource } from './io/encobj';
export { BlockStreamSource } from './io/blockstream';
export { Keyring, type KeyOptions, type EncryptionInfo } from './crypto/keyring';
export { parseCheckpoint, findGroup, findTag, tagUint, tagValueText, type Checkpoint, type Group } from './format/checkpoint';
export { MAGICS } from './format/header';
export { tagLabel, type Tag } from './format/tags';
export { buildRuns, type Run } from './format/regions';
export { SegmentMap, type Segment } from './tree/segments';
export { openSnapshot, type OpenOptions } from './evidence/snapshot';
export type { Snapshot, PhysMem } from './evidence/evidence';
export { openEvidence } from './evidence/open';
export type { Evidence } from './evidence/evidence';
export type { CpuState, VcpuState } from './format/cpu';
export { readGuestDump, guestRuns, NotGuestDump, type GuestDump } from './format/guestdump';
export { openGuestDump, type GuestDumpEvidence } from './evidence/guest';
export { PageCache, SourceReadError, type ChunkSource } from './cache/pagecache';
// One memory budget for the page cache and the decoding layers: give the same one to PageCache and openSnapshot.
export { CacheBudget, CacheSpace } from './cache/budget';
export { buildTree, type Tree } from './tree/build';
export type { Node, FileNode, DirNode } from './tree/nodes';
export { infoJson, infoJsonText, infoText, type InfoJson } from './evidence/info';
// VM folders (a tree of checkpoint trees) and diff
export { openFolder, type VmFolder, type FolderCheckpoint } from './evidence/folder/folder';
export { buildFolderTree } from './tree/folder';
export { parseVmsd, decodeCreateTime, type Vmsd, type VmsdEntry } from './evidence/folder/vmsd';
export { FilePool, PooledFile } from './io/pool';
