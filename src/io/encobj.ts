import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { DecodingLayer } from './layer';
import { VmssError } from '../errors';
import { openReadOnly, type DamagedRange, type Source } from './source';

/** First four bytes of an encrypted VMware data file (`encobj`), little-endian. */
export const ENCOBJ_MAGIC = 0x8943dd9e;
const HEADER = 4096;
/** Decrypted pages kept for the parser's many small synchronous reads. */
const PAGE_CACHE_PAGES = 64;
/** Past this, a logical size is not believed: 256 TiB, the page cache's key space. */
const MAX_LOGICAL = 2 ** 48;
/** The IV of the one CBC pass over rearranged pages: it only decrypts the first page's IV, which is skipped. */
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
  private readonly lru = new Map<number, Buffer>();

  private constructor(inner: Source, private readonly key: Buffer, readonly header: EncObjHeader) {
    super(inner);
    this.pages = Math.max(0, Math.floor((inner.size - HEADER) / 4096));
    const present = this.pages * 4064;
    const logical = header.logicalSize;
    if (logical <= present) {
      this.size = logical;
    } else if (logical <= MAX_LOGICAL) {
      // A truncated copy: the missing pages cannot be decrypted, and are not invented.
      this.size = logical;
      this.damaged.push({ start: present, end: logical, why: `its encrypted pages end at plaintext byte ${present}, short of the logical size ${logical} (truncated copy)` });
    } else {
      this.size = present;
      this.damaged.push({ start: present, end: present, why: `its header claims an absurd logical size (${logical} bytes); served as the ${present} bytes its pages hold` });
    }
  }

  static open(inner: Source, key: Buffer): EncObjSource {
    const head = Buffer.alloc(HEADER);
    const got = inner.readAtSync(head, 0);
    const h = parseEncObjHeader(inner.name, head.subarray(0, got));
    return new EncObjSource(inner, key, h);
  }

  private decryptPage(raw: Buffer, dst: Buffer, dstOffset: number): void {
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
    if (hit) {
      this.lru.delete(p);
      this.lru.set(p, hit);
      return hit;
    }
    const raw = Buffer.alloc(4096);
    if (this.inner.readAtSync(raw, HEADER + p * 4096) < 4096) throw this.pageError(p * 4064);
    const plain = Buffer.alloc(4064);
    this.decryptPage(raw, plain, 0);
    this.lru.set(p, plain);
    if (this.lru.size > PAGE_CACHE_PAGES) this.lru.delete(this.lru.keys().next().value as number);
    return plain;
  }

  /** Synchronous read for the parser; short at the end of the logical size or of the pages present. */
  readAtSync(buf: Buffer, position: number): number {
    const end = Math.min(position + buf.length, this.size, this.pages * 4064);
    if (end - position >= 4 * 4064) {
      // A large read (a compressed block): every page once, decrypted in one pass.
      const first = Math.floor(position / 4064);
      const last = Math.floor((end - 1) / 4064);
      const raw = Buffer.allocUnsafeSlow((last - first + 1) * 4096);
      if (this.inner.readAtSync(raw, HEADER + first * 4096) < raw.length) throw this.pageError(position);
      const from = position - first * 4064;
      return this.decryptPages(raw, last - first + 1).copy(buf, 0, from, from + (end - position));
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
    const plain = this.decryptPages(raw, last - first + 1);
    const from = position - first * 4064;
    plain.copy(buf, offset, from, from + (end - position));
    return end - position;
  }

  /**
   * Decrypt whole pages at once. In CBC each ciphertext block is XORed, once decrypted, with the
   * block before it; so with every page's IV moved in front of its ciphertext (IV ‖ ct, page
   * after page), one CBC pass over all of them decrypts every page correctly, each IV decrypting
   * to 16 bytes that are skipped. A cipher object per page cost more than the AES itself.
   */
  private decryptPages(raw: Buffer, pages: number): Buffer {
    const arranged = Buffer.allocUnsafe(pages * 4080);
    for (let p = 0; p < pages; p++) {
      raw.copy(arranged, p * 4080, p * 4096 + 4064, p * 4096 + 4080);
      raw.copy(arranged, p * 4080 + 16, p * 4096, p * 4096 + 4064);
    }
    const cbc = crypto.createDecipheriv('aes-256-cbc', this.key, ZERO_IV);
    cbc.setAutoPadding(false);
    const d = cbc.update(arranged);
    const plain = Buffer.allocUnsafe(pages * 4064);
    for (let p = 0; p < pages; p++) d.copy(plain, p * 4064, p * 4080 + 16, p * 4080 + 4080);
    return plain;
  }

}

