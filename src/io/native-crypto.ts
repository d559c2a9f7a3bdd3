import { loadAddon } from './addon';

/**
 * encobj pages decrypted in the native addon (native/encobj.c) with the OpenSSL of the Node
 * binary itself, when it can be loaded and finds it; src/io/encobj.ts decrypts in JavaScript
 * otherwise. Per 4064-byte page it costs a fraction of a Decipher object (docs/performance.md).
 */

interface CryptoAddon {
  encobjDecrypt(key: Buffer, raw: Buffer, pages: number, from: number, n: number, dst: Buffer, dstOffset: number): boolean;
}

let addon: CryptoAddon | null | undefined;

function native(): CryptoAddon | null {
  if (addon === undefined) {
    const a = loadAddon().exports as Partial<CryptoAddon> | null;
    addon = a && typeof a.encobjDecrypt === 'function' ? (a as CryptoAddon) : null;
  }
  return addon;
}

/**
 * Decrypt plaintext bytes [from, from + n) of the first `pages` pages of raw (ciphertext ‖ IV ‖
 * MAC each) into dst at dstOffset: true, or false when the native path is not there (then
 * nothing was written and the caller decrypts in JavaScript).
 */
export function decryptPagesNative(key: Buffer, raw: Buffer, pages: number, from: number, n: number, dst: Buffer, dstOffset: number): boolean {
  const a = native();
  return a !== null && a.encobjDecrypt(key, raw, pages, from, n, dst, dstOffset);
}
