import type { CacheBudget } from '../cache/budget';
import { VmssError } from '../errors';
import { BlockStreamSource, looksLikeBlockStream } from './blockstream';
import { ENCOBJ_MAGIC, EncObjSource } from './encobj';
import { SourceFile, type Source } from './source';

/** Gives the data files' key of an encrypted VM, asking for it only when one is met. */
export interface KeySupplier {
  dataKey(file: string): Buffer;
}

export interface OpenedSource {
  /** The bytes to parse or serve: the file itself, or the top of the layers decoding it. */
  source: Source;
  /** Decrypted from an `encobj` container. */
  encrypted: boolean;
  /** Served as the decompressed stream of VMware's block container. */
  stream: BlockStreamSource | null;
}

/** The error for an encrypted file met with no key material at all. */
export function noKeys(file: string): VmssError {
  return new VmssError(`${file} is encrypted (VMware encobj): give --password-file FILE, --key HEX or --vmx FILE`);
}

/**
 * Open `file` and stack what its content calls for: decryption when it is an `encobj`
 * container (the key comes from `keys`), then, for a memory file, decompression when the
 * (decrypted) bytes are VMware's compressed block container. Recognised by content, not name.
 */
export function openSource(
  file: string,
  opts: {
    keys: KeySupplier | null;
    memory: boolean;
    openFile?: ((file: string) => Source) | undefined;
    /** What the decoding layers' caches draw from: the mount's one budget (--cache-size). */
    budget?: CacheBudget | undefined;
  },
): OpenedSource {
  // The file as it lies on disk: opened here, or handed out by a VM folder's descriptor pool.
  const plain = (opts.openFile ?? SourceFile.open)(file);
  let source: Source = plain;
  try {
    const magic = Buffer.alloc(4);
    const encrypted = plain.readAtSync(magic, 0) === 4 && magic.readUInt32LE(0) === ENCOBJ_MAGIC;
    if (encrypted) {
      if (!opts.keys) throw noKeys(file);
      source = EncObjSource.open(plain, opts.keys.dataKey(file), opts.budget);
    }
    let stream: BlockStreamSource | null = null;
    if (opts.memory && looksLikeBlockStream(source)) {
      stream = new BlockStreamSource(source, { budget: opts.budget });
      source = stream;
    }
    return { source, encrypted, stream };
  } catch (err) {
    source.close();
    throw err;
  }
}
