import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { CacheBudget, type CacheSpace } from '../cache/budget';
import { droppedGarbage } from './garbage';
import { DecodingLayer } from './layer';
import { decryptPagesNative } from './native-crypto';
import { VmssError } from '../errors';
import { openReadOnly, type DamagedRange, type Source } from './source';

/** First four bytes of an encrypted VMware data file (`encobj`), little-endian. */
export const ENCOBJ_MAGIC = 0x8943dd9e;
const HEADER = 4096;
/** The budget of a file opened on its own, without the mount's: 64 decrypted pages and a scratch buffer. */
const DEFAULT_BUDGET = 8 * 1024 * 1024;
/** Scratch sizes are rounded up to this, so that a few sizes serve reads of every length. */
const SCRATCH_STEP = 256 * 1024;
/** Pages decrypted per update() of the one CBC pass (64 KiB). */
const DECRYPT_STEP = 16;
/** Past this, a logical size is not believed: 256 TiB, the page cache's key space. */
const MAX_LOGICAL = 2 ** 48;
/** The IV of the one CBC pass over whole pages (each page's first block is then corrected). */
const ZERO_IV = Buffer.alloc(16);

export interface EncObjHeader {
  version: number;
  dataPerPage: number;
  ivSize: number;
  macSize: number;
  logicalSize: number;
}

/**
 * Does `file` start with the encobj magic? Its first bytes only, nothing decrypted: what
 * decides whether a key must be asked for before anything is parsed. An unreadable file is not
 * one (opening it later says why).
 */
export function isEncObjFile(file: string): boolean {
  let fd: number | null = null;
  try {
    // As evidence is opened everywhere: read-only, without touching its access time.
    fd = openReadOnly(file).fd;
    const b = Buffer.alloc(4);
    return fs.readSync(fd, b, 0, 4, 0) === 4 && b.readUInt32LE(0) === ENCOBJ_MAGIC;
  } catch {
    return false;
  } finally {
    if (fd !== null) fs.closeSync(fd);
  }
}

/** The plaintext header, or a one-line reason it is not one this reader can use. */
export function parseEncObjHeader(name: string, head: Buffer): EncObjHeader {
  if (head.length < 0x20) throw new VmssError(`${name}: encrypted container header is cut short (${head.length} bytes)`);
  const h: EncObjHeader = {
    version: head.readUInt32LE(4),
    dataPerPage: head.readUInt32LE(8),
    ivSize: head.readUInt32LE(12),
    macSize: head.readUInt32LE(16),
    logicalSize: Number(head.readBigUInt64LE(0x18)),
  };
  // Only the layout seen in the wild is known to decrypt: 4064 data + 16 IV + 16 MAC per page.
  if (h.dataPerPage !== 4064 || h.ivSize !== 16 || h.macSize !== 16) {
    throw new VmssError(`${name}: encrypted container with an unknown page layout (${h.dataPerPage} data, ${h.ivSize} IV, ${h.macSize} MAC bytes per page; expected 4064/16/16)`);
  }
  return h;
}

/**
 * The plaintext of an `encobj` file: 4096-byte pages, each AES-256-CBC ciphertext (4064 bytes)
 * ‖ IV ‖ MAC, decrypted one at a time when read. Logical byte L lies in page L / 4064, so a
 * random read costs the pages it touches, never a prefix of the file.
 */
export class EncObjSource extends DecodingLayer implements Source {
  readonly size: number;
  readonly damaged: DamagedRange[] = [];
  /** Whole pages present in the file. */
  private readonly pages: number;
  /** Decrypted pages kept for the parser's many small synchronous reads (in the mount's budget). */
  private readonly lru: CacheSpace;
  /** The ciphertext buffer of large synchronous reads, kept between them in the budget. */
  private readonly scratch: CacheSpace;

  private constructor(inner: Source, private readonly key: Buffer, readonly header: EncObjHeader, budget: CacheBudget) {
    super(inner);
    this.lru = budget.space();
    this.scratch = budget.space();
    this.pages = Math.max(0, Math.floor((inner.size - HEADER) / 4096));
    const present = this.pages * 4064;
    const logical = header.logicalSize;
    if (logical <= present) {
      this.size = logical;
    } else if (logical <= MAX_LOGICAL) {
      // A truncated copy: the missing pages cannot be decrypted, and are not invented.
      this.size = logical;
      this.damaged.push({ start: present, end: logical, why: `its ${inner.size} bytes hold ${this.pages} whole encrypted page${this.pages === 1 ? '' : 's'}, so its plaintext ends at byte ${present}, short of the logical size ${logical} (truncated copy)` });
    } else {
      this.size = present;
      this.damaged.push({ start: present, end: present, why: `its header claims an absurd logical size (${logical} bytes); served as the ${present} bytes its pages hold` });
    }
  }

  static open(inner: Source, key: Buffer, budget: CacheBudget = new CacheBudget(DEFAULT_BUDGET)): EncObjSource {
    const head = Buffer.alloc(HEADER);
    const got = inner.readAtSync(head, 0);
    const h = parseEncObjHeader(inner.name, head.subarray(0, got));
    return new EncObjSource(inner, key, h, budget);
  }

  /**
   * What the native read path needs to decrypt a compressed stream's stored bytes itself
   * (src/fuse/native.ts): the data files' key, where the pages begin, the plaintext the file's
   * whole pages hold, and the file beneath. Handed to the addon only; never logged.
   */
  get nativeDecryption(): { key: Buffer; header: number; plainSize: number; file: Source } {
    return { key: this.key, header: HEADER, plainSize: Math.min(this.size, this.pages * 4064), file: this.inner };
  }

  private decryptPage(raw: Buffer, dst: Buffer, dstOffset: number): void {
    if (decryptPagesNative(this.key, raw, 1, 0, 4064, dst, dstOffset)) return;
    const d = crypto.createDecipheriv('aes-256-cbc', this.key, raw.subarray(4064, 4080));
    d.setAutoPadding(false);
    const a = d.update(raw.subarray(0, 4064));
    a.copy(dst, dstOffset);
    d.final().copy(dst, dstOffset + a.length);
  }

  private pageError(position: number): Error {
    const e = new Error(`${this.name}: plaintext byte ${position} lies in an encrypted page missing from the file`) as NodeJS.ErrnoException;
    e.code = 'EIO';
    return e;
  }

  /** Decrypted page `p` (4064 bytes), from the small LRU or the file. */
  private pageSync(p: number): Buffer {
    const hit = this.lru.get(p);
    if (hit) return hit;
    const raw = Buffer.alloc(4096);
    if (this.inner.readAtSync(raw, HEADER + p * 4096) < 4096) throw this.pageError(p * 4064);
    const plain = Buffer.alloc(4064);
    this.decryptPage(raw, plain, 0);
    this.lru.set(p, plain);
    return plain;
  }

  /** Synchronous read for the parser; short at the end of the logical size or of the pages present. */
  readAtSync(buf: Buffer, position: number): number {
    const end = Math.min(position + buf.length, this.size, this.pages * 4064);
    if (end - position >= 4 * 4064) {
      // A large read (a compressed block): every page once, decrypted in one pass.
      const first = Math.floor(position / 4064);
      const last = Math.floor((end - 1) / 4064);
      const need = (last - first + 1) * 4096;
      // The scratch stays in the budget (counted) while in use; of no pool, nothing else reuses it.
      let raw = this.scratch.get(0);
      if (!raw || raw.length < need) {
        raw = this.scratch.alloc(Math.ceil(need / SCRATCH_STEP) * SCRATCH_STEP);
        this.scratch.set(0, raw);
      }
      if (this.inner.readAtSync(raw.subarray(0, need), HEADER + first * 4096) < need) throw this.pageError(position);
      this.decryptPages(raw, last - first + 1, buf, 0, position - first * 4064, end - position);
      return end - position;
    }
    let done = 0;
    for (let pos = position; pos < end;) {
      const p = Math.floor(pos / 4064);
      const inPage = pos - p * 4064;
      const n = Math.min(4064 - inPage, end - pos);
      this.pageSync(p).copy(buf, done, inPage, inPage + n);
      done += n;
      pos += n;
    }
    return done;
  }

  /**
   * Asynchronous read for the page cache: the ciphertext pages are read on the thread pool in
   * one go, then decrypted here. Short only at the logical end; EIO where pages are missing.
   */
  async read(buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    const end = Math.min(position + length, this.size);
    if (end <= position) return 0;
    if (end > this.pages * 4064) throw this.pageError(Math.max(position, this.pages * 4064));
    const first = Math.floor(position / 4064);
    const last = Math.floor((end - 1) / 4064);
    const raw = Buffer.allocUnsafe((last - first + 1) * 4096);
    const got = await this.inner.read(raw, 0, raw.length, HEADER + first * 4096);
    if (got < raw.length) throw this.pageError(position);
    this.decryptPages(raw, last - first + 1, buf, offset, position - first * 4064, end - position);
    return end - position;
  }

  /**
   * Decrypt the first `pages` whole pages of `raw` (each ciphertext ‖ IV ‖ MAC) at once, writing
   * `n` bytes of their plaintext from `from` into dst at dstOffset. In CBC each ciphertext block
   * is XORed, once decrypted, with the block before it; so one CBC pass over the pages as they
   * lie decrypts every block right but each page's first, which it XORs with the 16 bytes before
   * it in the file (the previous page's MAC; for the first page, the zero IV) instead of the
   * page's own IV: XORing both in again corrects it. The IV and MAC blocks decrypt to bytes that
   * are skipped. A cipher object per page cost more than the AES itself, and moving each IV in
   * front of its page first cost a copy of every byte. The addon, when it loads, does the same
   * work with Node's own OpenSSL, a page at a time (src/io/native-crypto.ts).
   */
  private decryptPages(raw: Buffer, pages: number, dst: Buffer, dstOffset: number, from: number, n: number): void {
    if (decryptPagesNative(this.key, raw, pages, from, n, dst, dstOffset)) return;
    const cbc = crypto.createDecipheriv('aes-256-cbc', this.key, ZERO_IV);
    cbc.setAutoPadding(false);
    const firstPage = Math.floor(from / 4064);
    const lastPage = Math.min(pages - 1, Math.floor((from + n - 1) / 4064));
    // The pass goes a few pages at a time: each update() returns a new buffer, and small ones
    // are garbage the allocator reuses at once instead of multi-MiB ones that swell the RSS.
    for (let s = 0; s <= lastPage; s += DECRYPT_STEP) {
      const e = Math.min(s + DECRYPT_STEP, lastPage + 1);
      const d = cbc.update(raw.subarray(s * 4096, e * 4096));
      for (let p = Math.max(s, firstPage); p < e; p++) {
        const at = (p - s) * 4096;
        const rawAt = p * 4096;
        for (let i = 0; i < 16; i++) {
          const before = p === 0 ? 0 : (raw[rawAt - 16 + i] as number);
          d[at + i] = (d[at + i] as number) ^ before ^ (raw[rawAt + 4064 + i] as number);
        }
        const lo = Math.max(from, p * 4064);
        const hi = Math.min(from + n, p * 4064 + 4064);
        d.copy(dst, dstOffset + (lo - from), at + (lo - p * 4064), at + (hi - p * 4064));
      }
      droppedGarbage(d.length);
    }
  }


}

