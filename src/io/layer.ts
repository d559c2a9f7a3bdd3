import { nextSourceId, type Source } from './source';

/**
 * Bytes a decoding layer cannot produce (a damaged block, a range past a broken chain): EIO to
 * the reader, with the reason kept for the log and the command's message.
 */
export class DecodeError extends Error {
  readonly code = 'EIO';
  constructor(file: string, readonly reason: string) {
    super(`${file}: ${reason}`);
  }
}

/**
 * What every decoding layer (decryption, decompression) shares: its bytes are decoded (no
 * descriptor to read directly), and the file beneath it answers for its name, its time, who may
 * read it and whether it can be read in place (decoding is synchronous work on this thread either
 * way). Closing the layer closes what it wraps.
 */
export abstract class DecodingLayer {
  readonly id = nextSourceId();
  readonly decodes = true;

  constructor(protected readonly inner: Source) {}

  get readsInPlace(): boolean {
    return this.inner.readsInPlace;
  }

  get name(): string {
    return this.inner.name;
  }
  get mtime(): Date {
    return this.inner.mtime;
  }
  get owner(): Source['owner'] {
    return this.inner.owner;
  }
  get identity(): Source['identity'] {
    return this.inner.identity;
  }
  get atimeKept(): boolean {
    return this.inner.atimeKept;
  }

  close(): void {
    this.inner.close();
  }
}
