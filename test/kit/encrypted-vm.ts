/**
 * Fixture writer for encrypted VMs and compressed memory: the .vmx key chain (key safe opened by
 * a password, encryption.data holding the data files' key), `encobj` containers, and VMware's
 * compressed block container (FastLZ level 2, see fastlz.ts). Used by the tests, the fuzzer
 * and the bench to turn a plain snapshot written by writer.ts into what VMware would store.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { BLOCK_SIZE, FastLzStream, type EncoderStats } from './fastlz';

export const ENCOBJ_MAGIC = 0x8943dd9e;
const DATA_PER_PAGE = 4064;

export type KeySafeCipher = 'XTS-AES-256' | 'AES-256';

export interface KeyChainOptions {
  password: string;
  cipher?: KeySafeCipher;
  rounds?: number;
  /** The 64-byte dataFileKey; random by default. */
  dataFileKey?: Buffer;
  /** Percent-encode the dataFileKey's base64 inside the encrypted configuration too. */
  encodeDataKey?: boolean;
  /** Plain lines of the .vmx besides the two encryption ones. */
  extraLines?: string[];
  /**
   * Lines of the encrypted configuration (encryption.data) besides dataFileKey: VMware keeps most
   * of an encrypted VM's .vmx there. Default: a displayName.
   */
  configLines?: string[];
}

export interface KeyChain {
  /** The .vmx text VMware would write. */
  vmx: string;
  /** The 64-byte dataFileKey; its first 32 bytes are the AES-256-CBC key of the data files. */
  dataFileKey: Buffer;
  /** dataFileKey's first 32 bytes. */
  key: Buffer;
}

/** VMware's lowercase percent-encoding of the characters that mean something in a key safe. */
function pct(s: string): string {
  return s.replace(/[=\-:+/%]/g, (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0'));
}

/** IV ‖ AES-256-CBC(key[0:32], PKCS#7) ‖ HMAC-SHA1(macKey, plaintext). */
function seal(plain: Buffer, key: Buffer, macKey: Buffer): Buffer {
  const iv = crypto.randomBytes(16);
  const c = crypto.createCipheriv('aes-256-cbc', key.subarray(0, 32), iv);
  const ct = Buffer.concat([c.update(plain), c.final()]);
  return Buffer.concat([iv, ct, crypto.createHmac('sha1', macKey).update(plain).digest()]);
}

/** A .vmx whose key safe opens with `password` and whose encryption.data holds the data files' key. */
export function makeKeyChain(opts: KeyChainOptions): KeyChain {
  const cipher = opts.cipher ?? 'XTS-AES-256';
  const rounds = opts.rounds ?? 10000;
  const salt = crypto.randomBytes(8);
  const kek = crypto.pbkdf2Sync(Buffer.from(opts.password, 'utf8'), salt, rounds, cipher === 'XTS-AES-256' ? 64 : 32, 'sha1');
  const configKey = crypto.randomBytes(64);
  const dict = seal(Buffer.from(`type=key:cipher=XTS-AES-256:key=${pct(configKey.toString('base64'))}`), kek, kek);
  const dataFileKey = opts.dataFileKey ?? crypto.randomBytes(64);
  const dfk = opts.encodeDataKey ? pct(dataFileKey.toString('base64')) : dataFileKey.toString('base64');
  const configLines = opts.configLines ?? ['displayName = "Windows 11 x64"'];
  const realVmx = ['.encoding = "UTF-8"', ...configLines, `dataFileKey = "type=key:cipher=XTS-AES-256:key=${dfk}"`, ''].join('\n');
  const data = seal(Buffer.from(realVmx), configKey, configKey);
  // The salt is percent-encoded, then encoded again with the rest of the phrase.
  const phrase = pct(`pass2key=PBKDF2-HMAC-SHA-1:cipher=${cipher}:rounds=${rounds}:salt=${pct(salt.toString('base64'))}`);
  const keySafe = `vmware:key/list/(pair/(phrase/${crypto.randomUUID()}/${phrase},${pct('HMAC-SHA-1')},${pct(dict.toString('base64'))}))`;
  const vmx = [
    '.encoding = "UTF-8"',
    'config.version = "8"',
    ...(opts.extraLines ?? []),
    `encryption.keySafe = "${keySafe}"`,
    `encryption.data = "${data.toString('base64')}"`,
    '',
  ].join('\n');
  return { vmx, dataFileKey, key: Buffer.from(dataFileKey.subarray(0, 32)) };
}

export interface EncryptOptions {
  /** 1 for .vmss/.vmsn, 2 for .vmem. */
  version?: number;
  /** Logical size written in the header (default: the plaintext's length). */
  logicalSize?: number;
}

/** Write `src`'s bytes to `dst` as an `encobj` container encrypted with `key` (32 bytes). */
export function encryptFile(src: string, dst: string, key: Buffer, opts: EncryptOptions = {}): void {
  const inFd = fs.openSync(src, 'r');
  const outFd = fs.openSync(dst, 'w');
  try {
    const size = fs.fstatSync(inFd).size;
    const head = Buffer.alloc(4096);
    head.writeUInt32LE(ENCOBJ_MAGIC, 0);
    head.writeUInt32LE(opts.version ?? 1, 4);
    head.writeUInt32LE(DATA_PER_PAGE, 8);
    head.writeUInt32LE(16, 12);
    head.writeUInt32LE(16, 16);
    head.writeBigUInt64LE(BigInt(opts.logicalSize ?? size), 0x18);
    fs.writeSync(outFd, head, 0, head.length, 0);
    const PAGES = 256;
    const plain = Buffer.alloc(PAGES * DATA_PER_PAGE);
    const out = Buffer.alloc(PAGES * 4096);
    let outPos = 4096;
    for (let pos = 0; pos < size; pos += plain.length) {
      const got = fs.readSync(inFd, plain, 0, plain.length, pos);
      plain.fill(0, got);
      const pages = Math.ceil(got / DATA_PER_PAGE);
      for (let p = 0; p < pages; p++) {
        const iv = crypto.randomBytes(16);
        const c = crypto.createCipheriv('aes-256-cbc', key, iv);
        c.setAutoPadding(false);
        const ct = Buffer.concat([c.update(plain.subarray(p * DATA_PER_PAGE, (p + 1) * DATA_PER_PAGE)), c.final()]);
        ct.copy(out, p * 4096);
        iv.copy(out, p * 4096 + DATA_PER_PAGE);
        // The MAC's algorithm is not public (readers cannot check it): any 16 bytes stand in.
        crypto.createHash('md5').update(ct).digest().copy(out, p * 4096 + DATA_PER_PAGE + 16);
      }
      fs.writeSync(outFd, out, 0, pages * 4096, outPos);
      outPos += pages * 4096;
    }
  } finally {
    fs.closeSync(inFd);
    fs.closeSync(outFd);
  }
}

export interface CompressOptions {
  blockSize?: number;
  /** Blocks (by number) stored raw whether or not they compress. */
  rawBlocks?: number[];
}

/** Write `src`'s bytes to `dst` as VMware's compressed block container; returns what the encoder did. */
export function compressFile(src: string, dst: string, opts: CompressOptions = {}): EncoderStats {
  const blockSize = opts.blockSize ?? BLOCK_SIZE;
  const inFd = fs.openSync(src, 'r');
  const outFd = fs.openSync(dst, 'w');
  const enc = new FastLzStream();
  try {
    const size = fs.fstatSync(inFd).size;
    const buf = Buffer.alloc(blockSize);
    let outPos = 0;
    for (let pos = 0, k = 0; pos < size; pos += blockSize, k++) {
      const got = fs.readSync(inFd, buf, 0, Math.min(blockSize, size - pos), pos);
      const bytes = enc.encodeBlock(buf.subarray(0, got), { raw: opts.rawBlocks?.includes(k) });
      fs.writeSync(outFd, bytes, 0, bytes.length, outPos);
      outPos += bytes.length;
    }
  } finally {
    fs.closeSync(inFd);
    fs.closeSync(outFd);
  }
  return enc.stats;
}

const LOREM = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore. ';

/**
 * Page `n` of memory that compresses like a guest's: zero pages, text, repeated structures,
 * copies of recent pages (near and far matches), short-period patterns (overlapping matches)
 * and some incompressible pages, in a fixed rotation so that every construct of the codec
 * appears in every few blocks, at block boundaries too.
 */
export function compressiblePage(n: number, out: Buffer, prev: (back: number) => Buffer | null): Buffer {
  const b = out.subarray(0, 4096);
  const kind = n % 8;
  switch (kind) {
    case 0:
      b.fill(0);
      break;
    case 1:
      pageBytes(n, b);
      break;
    case 2: {
      const line = `page ${n}: ${LOREM}`;
      for (let o = 0; o < 4096; o += line.length) b.write(line, o, 'latin1');
      break;
    }
    case 3: {
      // Three pages back (12 KiB: a far match), with the page number changed.
      const src = prev(3);
      if (src) src.copy(b);
      else b.fill(0x33);
      b.writeUInt32LE(n, 64);
      break;
    }
    case 4:
      for (let o = 0; o < 4096; o++) b[o] = [0xab, 0xcd, 0xef][o % 3] as number;
      b.writeUInt32LE(n, 2048);
      break;
    case 5: {
      const src = prev(1);
      if (src) src.copy(b);
      else b.fill(0x55);
      for (let o = 100; o < 4096; o += 512) b[o] = n & 0xff;
      break;
    }
    case 6:
      b.fill(0);
      b.write(`marker ${n}`, 4000, 'latin1');
      break;
    default:
      pageBytes(n, b);
      b.fill(0, 2048);
  }
  return b;
}

/** Pseudo-random bytes for page n (xorshift32), incompressible. */
function pageBytes(n: number, b: Buffer): void {
  let x = (Math.imul(n + 1, 2654435761) >>> 0) || 1;
  for (let o = 0; o < 4096; o += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeUInt32LE(x >>> 0, o);
  }
}

/** Overwrite `file` (kept at its size) with compressiblePage content, page by page. */
export function fillCompressibleMemory(file: string): void {
  const fd = fs.openSync(file, 'r+');
  try {
    const pages = Math.floor(fs.fstatSync(fd).size / 4096);
    const BATCH = 1024;
    const ring: Buffer[] = [];
    const buf = Buffer.alloc(BATCH * 4096);
    for (let p0 = 0; p0 < pages; p0 += BATCH) {
      const cnt = Math.min(BATCH, pages - p0);
      for (let i = 0; i < cnt; i++) {
        const page = compressiblePage(p0 + i, buf.subarray(i * 4096, (i + 1) * 4096), (back) => ring[ring.length - back] ?? null);
        ring.push(Buffer.from(page));
        if (ring.length > 3) ring.shift();
      }
      fs.writeSync(fd, buf, 0, cnt * 4096, p0 * 4096);
    }
  } finally {
    fs.closeSync(fd);
  }
}
