/**
 * What both seek indexes (seekindex-js.ts, seekindex-native.ts) share: the contract
 * BlockStreamSource reads through, what it gives an index, and the pass with its waiters.
 */
import { type BlockEntry } from './container';

export interface IndexHost {
  readonly blocks: readonly BlockEntry[];
  /**
   * Block k's stored bytes: in `into` when given and large enough (the index reuses it), else in
   * a buffer of the caller's own, not reused.
   */
  readRaw(k: number, into?: Buffer): Promise<Buffer>;
  /** The most bytes of points and windows the index may hold (past it, points merge). */
  readonly allowance: number;
  /** The index grew by `bytes` (shrank, when negative): the caller counts it in its budget. */
  reserve(bytes: number): void;
}

/** Reads the stored bytes [offset, offset + length) of the block being read. */
export type ReadStored = (offset: number, length: number) => Promise<Buffer>;
export type ReadStoredSync = (offset: number, length: number) => Buffer;

/** What BlockStreamSource asks of a seek index, in JavaScript or in C. */
export interface BlockIndex {
  readonly bytes: number;
  readonly count: number;
  readonly done: boolean;
  failure: string | null;
  /** The C index's handle for the native read path (seekindex_napi.c), or null. */
  readonly nativeHandle: object | null;
  covers(k: number): boolean;
  /** Resolves once block k is covered or the pass has ended (then covers(k) may stay false). */
  reached(k: number): Promise<void>;
  /** Blocks indexed so far. */
  readonly indexed: number;
  /** Whether the pass is running (started, not ended). */
  readonly running: boolean;
  stop(): void;
  build(): Promise<void>;
  read(k: number, pos: number, n: number, dst: Buffer, at: number, readStored: ReadStored): Promise<void>;
  readSync(k: number, pos: number, n: number, dst: Buffer, at: number, readStored: ReadStoredSync): void;
}

/** Waiters for blocks to be reached, woken as the pass goes and when it ends. */
class Waiters {
  private list: { k: number; wake: () => void }[] = [];
  wait(k: number): Promise<void> {
    return new Promise((wake) => this.list.push({ k, wake }));
  }
  /** Wake those waiting for blocks below `indexed` (all when the pass ended). */
  wake(indexed: number, ended: boolean): void {
    if (this.list.length === 0) return;
    const keep: typeof this.list = [];
    for (const w of this.list) {
      if (ended || w.k < indexed) w.wake();
      else keep.push(w);
    }
    this.list = keep;
  }
}

/** The pass and its waiters, as both indexes run them: build() once, reached(k), stop(). */
export abstract class IndexPass {
  /** Why the pass stopped before the end (a damaged block), or null. */
  failure: string | null = null;
  done = false;
  running = false;
  protected stopped = false;
  protected readonly waiters = new Waiters();

  abstract readonly indexed: number;
  /** Whether block k can be read through the index. */
  abstract covers(k: number): boolean;
  protected abstract pass(): Promise<void>;

  reached(k: number): Promise<void> {
    return this.covers(k) || !this.running ? Promise.resolve() : this.waiters.wait(k);
  }

  stop(): void {
    this.stopped = true;
  }

  /** The pass over the stream; resolves when done, stopped, or halted by a damaged block. */
  async build(): Promise<void> {
    if (this.running || this.done) return;
    this.running = true;
    try {
      await this.pass();
    } finally {
      this.running = false;
      this.waiters.wake(this.indexed, true);
    }
  }

  /** The pass ends at block k, damaged: reads there and past it decode whole blocks, as before. */
  protected halt(k: number, b: BlockEntry, why: string): void {
    this.failure = `block ${k} (stream bytes ${b.start}-${b.start + b.size}) is damaged: ${why}`;
  }
}
