/**
 * vmssfs as a library: the layers the CLI and the mount are built from, each usable alone.
 * bytes → format (parseCheckpoint) → run map (openSnapshot's physmem) → page cache → tree.
 */
export { VmssError } from './errors';
export { SourceFile, BufferSource, type RandomAccess, type Source } from './io/source';
export { openSource, type KeySupplier } from './io/open';
export { EncObjSource } from './io/encobj';
export { BlockStreamSource } from './io/blockstream';
export { Keyring, type KeyOptions, type EncryptionInfo } from './crypto/keyring';
export { parseCheckpoint, findGroup, findTag, tagUint, tagValueText, type Checkpoint, type Group } from './format/checkpoint';
export { MAGICS } from './format/header';
export { tagLabel, type Tag } from './format/tags';
export { SegmentMap, buildRuns, type Run, type Segment } from './runmap';
export { openSnapshot, type Snapshot, type PhysMem, type OpenOptions } from './snapshot';
export { PageCache, SourceReadError, type ChunkSource } from './pagecache';
export { buildTree, type Tree } from './tree/build';
export type { Node, FileNode, DirNode } from './tree/nodes';
export { infoJson, infoJsonText, infoText, type InfoJson } from './info';
