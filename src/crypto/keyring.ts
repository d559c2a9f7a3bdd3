import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tty from 'node:tty';
import { VmssError } from '../errors';
import { readSmallEvidence } from '../io/source';
import { parseDictionary } from '../format/dictionary';
import { dataFileKeyFromConfig, decryptConfig, parseKeySafe, unlockKeySafe } from './keysafe';

/** What the user gave to open an encrypted VM (all optional; nothing is read until needed). */
export interface KeyOptions {
  /** File whose first line is the password; '-' is standard input. */
  passwordFile?: string;
  /** The data files' key as hex (32 bytes, or the 64 of dataFileKey of which the first 32 count). */
  key?: string;
  /** File whose first line is that key in hex; '-' is standard input (a terminal is read without echo). */
  keyFile?: string;
  /** The VM's .vmx holding encryption.keySafe. */
  vmx?: string;
  /** Ask on the terminal (no echo) when nothing else gave a password. */
  prompt?: boolean;
}

/** What info and metadata.json say about the decryption: never the password or a key. */
export interface EncryptionInfo {
  /** How the key was obtained. */
  keyFrom: 'password' | '--key';
  /** The .vmx whose key safe was opened (absent with --key). */
  vmx?: string;
  cipher?: string;
  rounds?: number;
}

/** The resolved key, as the mount command hands it to its daemon over a pipe. */
export interface KeyHandoff {
  key: string;
  info: EncryptionInfo;
  /**
   * The decrypted configuration of info.vmx, when the key came from its key safe: a VM folder's
   * daemon reads checkpoint.vmState there. A secret (it holds the key), like `key`.
   */
  config?: string;
}

interface Resolved {
  key: Buffer;
  info: EncryptionInfo;
  /** The text of encryption.data, decrypted; null with --key (no key safe was opened). */
  config: string | null;
}

/**
 * Resolves the data files' key once, on first need, from the options: --key directly, or the
 * key chain of the .vmx opened with the password (from --password-file or a prompt).
 */
export class Keyring {
  private resolved: Resolved | null = null;

  constructor(private readonly opts: KeyOptions = {}) {}

  /** A keyring that already holds the key (the daemon's, from its parent). */
  static fromHandoff(h: KeyHandoff): Keyring {
    const k = new Keyring();
    k.resolved = { key: Buffer.from(h.key, 'hex'), info: h.info, config: h.config ?? null };
    return k;
  }

  handoff(): KeyHandoff | null {
    const r = this.resolved;
    return r && { key: r.key.toString('hex'), info: r.info, ...(r.config !== null ? { config: r.config } : {}) };
  }

  /** Set once a key was needed and found. */
  get info(): EncryptionInfo | null {
    return this.resolved?.info ?? null;
  }

  /**
   * The AES-256-CBC key for the encrypted file `file`. Throws VmssError naming the way out.
   * `vmx` is the key-safe .vmx to use when --vmx was not given (a VM folder's own); without
   * either, the one beside `file`.
   */
  dataKey(file: string, vmx?: string): Buffer {
    if (!this.resolved) this.resolved = this.resolve(file, vmx);
    return this.resolved.key;
  }

  /**
   * The decrypted configuration (encryption.data) of `vmx`, once the key was opened from that
   * .vmx's key safe; null otherwise (not yet asked, --key, or another .vmx). Holds the key: read
   * values from it, never show it.
   */
  config(vmx: string): string | null {
    const r = this.resolved;
    return r && r.config !== null && r.info.vmx === path.resolve(vmx) ? r.config : null;
  }

  private resolve(file: string, defaultVmx: string | undefined): Resolved {
    const given = this.opts.key ?? (this.opts.keyFile !== undefined ? readSecretLine(this.opts.keyFile, 'key file', 'Data file key (hex): ') : undefined);
    if (given !== undefined) {
      const hex = given.trim();
      if (!/^([0-9a-fA-F]{64}|[0-9a-fA-F]{128})$/.test(hex)) {
        const from = this.opts.key !== undefined ? '--key takes' : `${this.opts.keyFile === '-' ? 'standard input' : this.opts.keyFile}: --key-file takes`;
        throw new VmssError(`${from} the data file key as 64 (or 128) hex digits`);
      }
      return { key: Buffer.from(hex.slice(0, 64), 'hex'), info: { keyFrom: '--key' }, config: null };
    }
    const vmxPath = this.opts.vmx !== undefined ? path.resolve(this.opts.vmx) : defaultVmx !== undefined ? path.resolve(defaultVmx) : findVmx(file);
    if (vmxPath === null) {
      throw new VmssError(`${file} is encrypted (VMware encobj), and no .vmx holding encryption.keySafe is beside it: give the VM's .vmx with --vmx FILE and its password with --password-file FILE, or the data file key with --key HEX`);
    }
    let text: string;
    try {
      const read = readSmallEvidence(vmxPath, VMX_MAX);
      if (read.bytes === null) throw new VmssError(`${vmxPath}: ${read.size} bytes is too large for a .vmx`);
      text = read.bytes.toString('utf8');
    } catch (err) {
      if (err instanceof VmssError) throw err;
      throw new VmssError(`${vmxPath}: cannot read the .vmx${this.opts.vmx !== undefined ? ' given with --vmx' : ''} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    const vmx = parseDictionary(text).values;
    const safe = vmx.get('encryption.keysafe');
    const data = vmx.get('encryption.data');
    if (!safe || !data) throw new VmssError(`${vmxPath}: holds no encryption.keySafe and encryption.data: not the .vmx of an encrypted VM (give the right one with --vmx)`);
    const ks = parseKeySafe(safe, vmxPath);
    const password = this.password(file, vmxPath);
    const configKey = unlockKeySafe(ks, password, vmxPath);
    const config = decryptConfig(data, configKey, vmxPath);
    const key = dataFileKeyFromConfig(config, vmxPath);
    return { key, info: { keyFrom: 'password', vmx: vmxPath, cipher: ks.cipher, rounds: ks.rounds }, config };
  }

  private password(file: string, vmxPath: string): string {
    if (this.opts.passwordFile !== undefined) return readSecretLine(this.opts.passwordFile, 'password file', `Password for ${path.basename(vmxPath)}: `);
    if (this.opts.prompt && process.stdin.isTTY) return promptPassword(`Password for ${path.basename(vmxPath)}: `);
    throw new VmssError(`${file} is encrypted (VMware encobj, key safe in ${vmxPath}): give its password with --password-file FILE (- for standard input), or the data file key with --key HEX (and another .vmx with --vmx FILE)`);
  }
}

/** A .vmx is a few KiB: a file larger than this is not one, and is not read. */
const VMX_MAX = 4 * 1024 * 1024;

/** The one .vmx in `file`'s folder holding encryption.keySafe; null when none; an error when several. */
export function findVmx(file: string): string | null {
  const dir = path.dirname(path.resolve(file));
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return null;
  }
  const found: string[] = [];
  for (const n of names.filter((x) => /\.vmx$/i.test(x)).sort()) {
    const p = path.join(dir, n);
    try {
      // A .vmx is a few KiB; anything large is not one.
      const read = readSmallEvidence(p, VMX_MAX);
      if (read.bytes !== null && parseDictionary(read.bytes.toString('utf8')).values.has('encryption.keysafe')) found.push(p);
    } catch {
      // unreadable: not a candidate
    }
  }
  if (found.length > 1) {
    throw new VmssError(`${file} is encrypted, and several .vmx files beside it hold a key safe (${found.map((f) => path.basename(f)).join(', ')}): choose one with --vmx FILE`);
  }
  return found[0] ?? null;
}

/**
 * The first line of a password or key file, decoded as people store text: UTF-8, with or
 * without a byte-order mark, or UTF-16 with one (Windows PowerShell 5.1's `>` writes UTF-16LE
 * with a BOM); the line ends at LF or CRLF. `-` is standard input; on a terminal, one line is
 * read there without echo, as the prompt reads it (`question` is shown first).
 */
export function readSecretLine(file: string, what: string, question: string): string {
  const where = file === '-' ? 'standard input' : file;
  let bytes: Buffer;
  try {
    if (file === '-' && isTerminal(0)) return promptPassword(question, 0, what === 'key file' ? 'key' : 'password');
    bytes = file === '-' ? fs.readFileSync(0) : fs.readFileSync(file);
  } catch (err) {
    if (err instanceof VmssError) throw err;
    throw new VmssError(`${where}: cannot read the ${what} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const line = decodeText(bytes).split(/\r?\n/)[0] ?? '';
  if (line === '') throw new VmssError(`${where}: the ${what}'s first line is empty`);
  return line;
}

/** Text by its byte-order mark: UTF-8 (mark dropped), UTF-16LE or UTF-16BE; UTF-8 without one. */
export function decodeText(b: Buffer): string {
  if (b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf) return b.subarray(3).toString('utf8');
  if (b[0] === 0xff && b[1] === 0xfe) return b.subarray(2).toString('utf16le');
  if (b[0] === 0xfe && b[1] === 0xff) {
    const le = Buffer.from(b.subarray(2, 2 + ((b.length - 2) & ~1)));
    return le.swap16().toString('utf16le');
  }
  return b.toString('utf8');
}

function isTerminal(fd: number): boolean {
  try {
    return tty.isatty(fd);
  } catch {
    return false;
  }
}

/**
 * Read a line from the terminal with echo off (stty), restoring it whatever happens: the
 * controlling terminal, or `fd` when it is one (standard input named by `-`).
 */
function promptPassword(question: string, fd?: number, what = 'password'): string {
  const term = fd ?? fs.openSync('/dev/tty', 'r+');
  const stty = (arg: string): void => void spawnSync('stty', [arg], { stdio: [term, 'ignore', 'ignore'] });
  // A terminal on standard input is normally open for writing too; else the question goes to stderr.
  const say = (text: string): void => {
    try {
      fs.writeSync(term, text);
    } catch {
      fs.writeSync(2, text);
    }
  };
  try {
    // Echo off before the question: whatever is typed once it shows is never echoed.
    stty('-echo');
    say(question);
    const chunks: Buffer[] = [];
    const b = Buffer.alloc(256);
    for (;;) {
      const n = fs.readSync(term, b, 0, b.length, null);
      if (n <= 0) break;
      chunks.push(Buffer.from(b.subarray(0, n)));
      if (b.subarray(0, n).includes(0x0a)) break;
    }
    const line = Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '';
    if (line === '') throw new VmssError(`no ${what} was typed`);
    return line;
  } finally {
    stty('echo');
    say('\n');
    if (fd === undefined) fs.closeSync(term);
  }
}
