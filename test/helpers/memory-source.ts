import { BufferSource } from '../../src/io/source';

/**
 * A Source over bytes in memory that counts the bytes read through it. Its asynchronous read goes
 * through readAtSync, so every read is counted once.
 */
export class MemorySource extends BufferSource {
  bytes = 0;
  override readAtSync(buf: Buffer, position: number): number {
    const n = super.readAtSync(buf, position);
    this.bytes += n;
    return n;
  }
}
