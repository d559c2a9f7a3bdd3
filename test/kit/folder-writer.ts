// Deterministic writer of VM folders (a .vmx, its .vmsd snapshot database, snapshots and a
// suspended state), for tests and the bench. Written from the format notes, independently of
// src/evidence/folder/, and built on writer.ts's checkpoints. Each checkpoint's memory is the writer's
// usual page pattern with some pages altered, so a test knows exactly which pages differ.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { encryptFile, makeKeyChain, type KeySafeCipher } from './encrypted-vm';
import { PAGE, writeSnapshot, type RegionSpec, type WrittenSnapshot } from './writer';

/** The bytes an altered page holds: the usual pattern with `0xdead0000 + generation` at byte 100. */
export function alteredPage(page: Buffer, generation: number): Buffer {
  page.writeUInt32LE((0xdead0000 + generation) >>> 0, 100);
  return page;
}

export interface FolderCheckpointSpec {
  /** The checkpoint's file name in the folder (`vault-Snapshot1.vmsn`, `vault-3-3c85c1f6.vmss`). */
  file: string;
  /** Memory in a sibling .vmem (default), or none at all (a snapshot taken without memory). */
  memory?: 'vmem' | 'none';
  /** Memory size in pages (default 256) and its regions (default one from page 0). */
  pages?: number;
  regions?: RegionSpec[];
  /** Guest-physical page numbers whose bytes differ from the pattern, each with its generation. */
  altered?: ReadonlyMap<number, number>;
  /** Write only marker pages (the rest are holes): large sparse memory for the bench. */
  sparse?: boolean;
}

export interface VmsdSnapshotSpec extends FolderCheckpointSpec {
  uid: number;
  parent?: number;
  displayName: string;
  description?: string;
  /** ISO 8601. */
  created: string;
  /** Listed in the .vmsd but not written (a copy that lost it). */
  missing?: boolean;
}

export interface VmFolderSpec {
  /** The .vmx's basename without extension. */
  name: string;
  snapshots: VmsdSnapshotSpec[];
  current?: number;
  /** The suspended state; named by the .vmx's checkpoint.vmState unless `unnamed`. */
  suspended?: FolderCheckpointSpec & { unnamed?: boolean };
  /** Raw .vmsd text to write instead of the one the specs describe. */
  vmsdText?: string;
}

export interface WrittenFolderCheckpoint {
  written: WrittenSnapshot | null;
  /** Expected bytes of guest-physical [addr, addr+length), altered pages included. */
  readPhys(addr: number, length: number): Buffer;
  /** sha256 hex of the flat physical image, altered pages included. */
  physSha256(): string;
}

export interface WrittenVmFolder {
  dir: string;
  vmx: string;
  vmsd: string;
  /** By .vmsd uid; the suspended state under 'suspended'. */
  checkpoints: Map<number | 'suspended', WrittenFolderCheckpoint>;
}

/** A .vmx/.vmsd value: `"` and `|` written as VMware escapes them (`|22`, `|7C`). */
function quote(v: string): string {
  return `"${v.replace(/\|/g, '|7C').replace(/"/g, '|22')}"`;
}

/** Microseconds since 1970 as the .vmsd's two signed 32-bit halves. */
export function createTimeHalves(iso: string): { high: number; low: number } {
  const micros = BigInt(Date.parse(iso)) * 1000n;
  const high = Number(micros >> 32n);
  const low = Number(BigInt.asIntN(32, micros & 0xffff_ffffn));
  return { high, low };
}

export function vmsdText(snapshots: VmsdSnapshotSpec[], current: number | undefined): string {
  const lines = ['.encoding = "UTF-8"'];
  lines.push(`snapshot.lastUID = ${quote(String(Math.max(0, ...snapshots.map((s) => s.uid))))}`);
  if (current !== undefined) lines.push(`snapshot.current = ${quote(String(current))}`);
  snapshots.forEach((s, i) => {
    const k = `snapshot${i}`;
    const t = createTimeHalves(s.created);
    lines.push(`${k}.uid = ${quote(String(s.uid))}`);
    lines.push(`${k}.filename = ${quote(s.file)}`);
    if (s.parent !== undefined) lines.push(`${k}.parent = ${quote(String(s.parent))}`);
    lines.push(`${k}.displayName = ${quote(s.displayName)}`);
    if (s.description !== undefined) lines.push(`${k}.description = ${quote(s.description)}`);
    lines.push(`${k}.createTimeHigh = ${quote(String(t.high))}`);
    lines.push(`${k}.createTimeLow = ${quote(String(t.low))}`);
    lines.push(`${k}.numDisks = "1"`);
    lines.push(`${k}.disk0.fileName = ${quote(`vm-00000${i + 1}.vmdk`)}`);
    lines.push(`${k}.disk0.node = "scsi0:0"`);
  });
  lines.push(`snapshot.numSnapshots = ${quote(String(snapshots.length))}`);
  return lines.join('\n') + '\n';
}

function vmxText(name: string, vmState: string | null): string {
  return [
    '.encoding = "UTF-8"',
    'config.version = "8"',
    'virtualHW.version = "21"',
    `displayName = ${quote(name)}`,
    'guestOS = "windows9-64"',
    'memsize = "1"',
    `checkpoint.vmState = ${quote(vmState ?? '')}`,
    '',
  ].join('\n');
}

/** Write one checkpoint of the folder and alter its pages in place. */
export function writeFolderCheckpoint(dir: string, spec: FolderCheckpointSpec): WrittenFolderCheckpoint {
  const pages = spec.pages ?? 256;
  const w = writeSnapshot(path.join(dir, spec.file), {
    memory: spec.memory ?? 'vmem',
    blobPages: pages,
    regions: spec.regions,
    sparse: spec.sparse,
    screenshot: false,
  });
  const altered = spec.altered ?? new Map<number, number>();
  const patch = (addr: number, out: Buffer): void => {
    // out holds guest-physical [addr, addr+out.length): overlay the altered pages it covers.
    for (const [n, gen] of altered) {
      const ps = n * PAGE;
      if (ps + PAGE <= addr || ps >= addr + out.length) continue;
      const page = alteredPage(w.readPhys(ps, PAGE), gen);
      const from = Math.max(ps, addr);
      const to = Math.min(ps + PAGE, addr + out.length);
      page.copy(out, from - addr, from - ps, to - ps);
    }
  };
  if (altered.size > 0) {
    const fd = fs.openSync(w.vmemPath as string, 'r+');
    try {
      for (const [n, gen] of altered) {
        const run = w.runs.find((r) => r.physAddr <= n * PAGE && n * PAGE < r.physAddr + r.length);
        if (!run) throw new RangeError(`altered page ${n} is not in ${spec.file}'s memory`);
        const bytes = alteredPage(w.readPhys(n * PAGE, PAGE), gen);
        fs.writeSync(fd, bytes, 0, PAGE, run.fileOffset + (n * PAGE - run.physAddr));
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  const readPhys = (addr: number, length: number): Buffer => {
    const out = w.readPhys(addr, length);
    patch(addr, out);
    return out;
  };
  const physSha256 = (): string => {
    if (altered.size === 0) return w.physSha256();
    const h = crypto.createHash('sha256');
    for (let a = 0; a < w.physSize; a += 1 << 20) h.update(readPhys(a, Math.min(1 << 20, w.physSize - a)));
    return h.digest('hex');
  };
  return { written: w, readPhys, physSha256 };
}

/** Write a VM folder into `dir` (which must exist): the .vmx, the .vmsd, and every checkpoint. */
export function writeVmFolder(dir: string, spec: VmFolderSpec): WrittenVmFolder {
  const checkpoints = new Map<number | 'suspended', WrittenFolderCheckpoint>();
  for (const s of spec.snapshots) {
    if (!s.missing) checkpoints.set(s.uid, writeFolderCheckpoint(dir, s));
  }
  if (spec.suspended) checkpoints.set('suspended', writeFolderCheckpoint(dir, spec.suspended));
  const vmx = path.join(dir, `${spec.name}.vmx`);
  const vmsd = path.join(dir, `${spec.name}.vmsd`);
  const vmState = spec.suspended && !spec.suspended.unnamed ? spec.suspended.file : null;
  fs.writeFileSync(vmx, vmxText(spec.name, vmState));
  fs.writeFileSync(vmsd, spec.vmsdText ?? vmsdText(spec.snapshots, spec.current));
  return { dir, vmx, vmsd, checkpoints };
}

export interface EncryptFolderOptions {
  password: string;
  rounds?: number;
  cipher?: KeySafeCipher;
  /**
   * Where checkpoint.vmState goes: inside the encrypted configuration (default; the plain .vmx
   * of an encrypted VM keeps only a few keys), or left in the plain .vmx.
   */
  vmState?: 'encrypted' | 'plain';
  /** Encrypt the .vmsd too (an encobj container, as the checkpoints). Default: left plain. */
  encryptVmsd?: boolean;
}

export interface EncryptedVmFolder {
  dir: string;
  vmx: string;
  vmsd: string;
  /** The data files' AES key (32 bytes): a test's secret to look for in output. */
  key: Buffer;
  /** Basenames of the files written encrypted. */
  encrypted: string[];
}

/** Plain .vmx keys an encrypted VM keeps outside encryption.data (makeKeyChain writes .encoding and config.version). */
const PLAIN_VMX_KEYS = /^(displayname)\s*=/i;

/**
 * The encrypted copy of a folder written by writeVmFolder, in `dir` (which must exist), as VMware
 * stores an encrypted VM: every checkpoint and memory file an `encobj` container under one data
 * key, and a .vmx holding the key safe whose encryption.data holds the key and the rest of the
 * configuration. `plain` is left as it was: the plaintext the tests compare with.
 */
export function encryptVmFolder(plain: WrittenVmFolder, dir: string, opts: EncryptFolderOptions): EncryptedVmFolder {
  const lines = fs.readFileSync(plain.vmx, 'utf8').split('\n').filter((l) => l !== '' && !l.startsWith('.encoding') && !l.startsWith('config.version'));
  const inPlain = (l: string): boolean => PLAIN_VMX_KEYS.test(l) || (opts.vmState === 'plain' && /^checkpoint\.vmState\s*=/i.test(l));
  const chain = makeKeyChain({
    password: opts.password, rounds: opts.rounds, cipher: opts.cipher,
    extraLines: lines.filter(inPlain), configLines: lines.filter((l) => !inPlain(l)),
  });
  const vmx = path.join(dir, path.basename(plain.vmx));
  const vmsd = path.join(dir, path.basename(plain.vmsd));
  fs.writeFileSync(vmx, chain.vmx);
  const encrypted: string[] = [];
  for (const name of fs.readdirSync(plain.dir).sort()) {
    const src = path.join(plain.dir, name);
    const dst = path.join(dir, name);
    if (/\.(vmsn|vmss|vmem)$/i.test(name) || (src === plain.vmsd && opts.encryptVmsd)) {
      // The header's version: 2 for memory files, 1 for the rest (as VMware writes them).
      encryptFile(src, dst, chain.key, { version: /\.vmem$/i.test(name) ? 2 : 1 });
      encrypted.push(name);
    } else if (src === plain.vmsd) {
      fs.copyFileSync(src, dst);
    }
  }
  return { dir, vmx, vmsd, key: chain.key, encrypted };
}
