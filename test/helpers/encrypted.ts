// Builds the encrypted and compressed fixtures: a plain snapshot from the writer, then the same
// snapshot as VMware stores it for an encrypted VM (Windows 11 naming) or with compressed memory.

import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { compressFile, encryptFile, fillCompressibleMemory, makeKeyChain, type KeySafeCipher } from '../kit/encrypted-vm';
import type { EncoderStats } from '../kit/fastlz';
import { writeSnapshot, type RegionSpec, type WrittenSnapshot } from '../kit/writer';
import { runCommand } from './run';

export const PASSWORD = 'S3cret-Pass!';

export interface VmFolderOptions {
  encrypt: boolean;
  compress: boolean;
  blobPages?: number;
  regions?: RegionSpec[];
  /** Compressed block size (VMware's is 4 MiB; smaller gives many blocks from little memory). */
  blockSize?: number;
  rawBlocks?: number[];
  cipher?: KeySafeCipher;
  rounds?: number;
  /** Extension of the metadata file: .vmsn (a snapshot, default) or .vmss (a suspended VM). */
  metaExt?: '.vmsn' | '.vmss';
}

export interface VmFolder {
  /** The plaintext the writer started from: a plain snapshot with its .vmem. */
  plain: WrittenSnapshot;
  dir: string;
  meta: string;
  vmem: string;
  vmx: string | null;
  /** The data files' AES key (hex) and the password-file path. */
  keyHex: string | null;
  passwordFile: string;
  stats: EncoderStats | null;
}

/**
 * `root`/plain holds the plain snapshot; `root`/vm the VM folder: VM.vmx, VM-Snapshot1.vmsn and
 * VM-Snapshot1.vmem, encrypted and/or with compressed memory as asked.
 */
export function writeVmFolder(root: string, opts: VmFolderOptions): VmFolder {
  const plainDir = path.join(root, 'plain');
  const dir = path.join(root, 'vm');
  fs.mkdirSync(plainDir, { recursive: true });
  fs.mkdirSync(dir, { recursive: true });
  const ext = opts.metaExt ?? '.vmsn';
  const plain = writeSnapshot(path.join(plainDir, `VM-Snapshot1${ext}`), { memory: 'vmem', blobPages: opts.blobPages ?? 1024, regions: opts.regions });
  const plainVmem = plain.vmemPath as string;
  if (opts.compress) fillCompressibleMemory(plainVmem);
  const meta = path.join(dir, `VM-Snapshot1${ext}`);
  const vmem = path.join(dir, 'VM-Snapshot1.vmem');
  const passwordFile = path.join(root, 'password.txt');
  fs.writeFileSync(passwordFile, `${PASSWORD}\n`);
  let stats: EncoderStats | null = null;
  let memSrc = plainVmem;
  if (opts.compress) {
    memSrc = opts.encrypt ? path.join(root, 'compressed.vmem') : vmem;
    stats = compressFile(plainVmem, memSrc, { blockSize: opts.blockSize, rawBlocks: opts.rawBlocks });
  }
  let vmx: string | null = null;
  let keyHex: string | null = null;
  if (opts.encrypt) {
    const chain = makeKeyChain({ password: PASSWORD, cipher: opts.cipher, rounds: opts.rounds ?? 2000, extraLines: ['displayName = "Windows 11 x64"', 'vtpm.present = "TRUE"'] });
    vmx = path.join(dir, 'VM.vmx');
    fs.writeFileSync(vmx, chain.vmx);
    keyHex = chain.key.toString('hex');
    encryptFile(plain.path, meta, chain.key, { version: 1 });
    encryptFile(memSrc, vmem, chain.key, { version: 2 });
  } else {
    fs.copyFileSync(plain.path, meta);
    if (!opts.compress) fs.copyFileSync(plainVmem, vmem);
  }
  return { plain, dir, meta, vmem, vmx, keyHex, passwordFile, stats };
}

/** Every regular file under `dir` (a mount: read asynchronously), relative, sorted. */
export async function walkFiles(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await fs.promises.readdir(path.join(dir, rel))).sort()) {
    const r = path.join(rel, name);
    const st = await fs.promises.stat(path.join(dir, r));
    if (st.isDirectory()) out.push(...(await walkFiles(dir, r)));
    else out.push(r);
  }
  return out;
}

/** cmp(1)'s verdict on two files: null when identical, else its message. */
export async function cmpFiles(a: string, b: string): Promise<string | null> {
  const r = await runCommand('cmp', [a, b], { timeoutMs: 60_000 });
  return r.code === 0 ? null : (r.stdout + r.stderr).trim();
}

/** The secrets that must never show: the password, the data key in hex and in base64. */
export function secretsOf(keyHex: string, password = PASSWORD): string[] {
  return [password, keyHex, Buffer.from(keyHex, 'hex').toString('base64').slice(0, 20)];
}

export function expectNoSecrets(text: string, secrets: readonly string[], where: string): void {
  for (const s of secrets) expect(text.includes(s), `${where} shows a secret`).to.equal(false);
}

/** The pid of the detached daemon serving `mnt`, from its command line in /proc. */
export function daemonPid(mnt: string): number | null {
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const args = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      if (args.includes('--daemon-child') && args.includes(mnt)) return Number(d);
    } catch {
      // gone
    }
  }
  return null;
}
