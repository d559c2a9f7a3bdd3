import * as crypto from 'node:crypto';
import { VmssError } from '../errors';
import { parseDictionary } from '../format/dictionary';

/** The password-protected key safe of an encrypted VM's .vmx (`encryption.keySafe`). */
export interface KeySafe {
  /** PBKDF2 key length follows the cipher name: 64 bytes for XTS-AES-256, 32 for AES-256. */
  cipher: string;
  rounds: number;
  salt: Buffer;
  /** IV ‖ AES-256-CBC ciphertext ‖ HMAC-SHA1. */
  dict: Buffer;
}

/** More PBKDF2 rounds than this are not a VMware key safe but a way to hang the tool. */
const MAX_ROUNDS = 50_000_000;

/** Undo percent-encoding (VMware writes lowercase hex; the salt is encoded twice). */
function pctDecode(s: string): string {
  return s.replace(/%([0-9a-fA-F]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16)));
}

/** Decode until no escape is left: base64 never contains '%', so this cannot over-decode it. */
function pctDecodeAll(s: string): string {
  for (let i = 0; i < 4 && /%[0-9a-fA-F]{2}/.test(s); i++) s = pctDecode(s);
  return s;
}

function base64Strict(s: string, what: string, file: string): Buffer {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) throw new VmssError(`${file}: ${what} is not base64`);
  return Buffer.from(s, 'base64');
}

/** Parse `encryption.keySafe`'s value. `file` names the .vmx in errors. */
export function parseKeySafe(value: string, file: string): KeySafe {
  // VMware percent-encodes every part after `pair/(`, the phrase ID too: an ID of 8 random bytes
  // in base64 holds a `/` (written %2f) about one time in six. So the value is split on its own
  // separators first, and each part decoded after.
  const parts = /phrase\/([^/,()]*)\/([^,()]+),([^,()]+),([^,()]+)\)/.exec(value);
  const m = parts && /^pass2key=([^:]+):cipher=([^:]+):rounds=([0-9]+):salt=(.+)$/.exec(pctDecode(parts[2] as string));
  if (!parts || !m) throw new VmssError(`${file}: encryption.keySafe is not a password key safe this tool can read`);
  const [, kdf, cipher, rounds, salt] = m as unknown as string[];
  const mac = pctDecode(parts[3] as string);
  const dict = parts[4] as string;
  if (kdf !== 'PBKDF2-HMAC-SHA-1') throw new VmssError(`${file}: key safe uses ${kdf}, not PBKDF2-HMAC-SHA-1`);
  if (mac !== 'HMAC-SHA-1') throw new VmssError(`${file}: key safe is checked with ${mac}, not HMAC-SHA-1`);
  if (cipher !== 'XTS-AES-256' && cipher !== 'AES-256') throw new VmssError(`${file}: key safe cipher ${cipher} is not XTS-AES-256 or AES-256`);
  const r = Number(rounds);
  if (!Number.isSafeInteger(r) || r < 1 || r > MAX_ROUNDS) throw new VmssError(`${file}: key safe asks for ${rounds} PBKDF2 rounds (1 to ${MAX_ROUNDS} accepted)`);
  return {
    cipher: cipher as string,
    rounds: r,
    salt: base64Strict(pctDecodeAll(salt as string), 'the key safe\'s salt', file),
    dict: base64Strict(pctDecodeAll(dict as string), 'the key safe\'s dictionary', file),
  };
}

/** AES-256-CBC with PKCS#7 padding over IV ‖ ciphertext ‖ 20-byte MAC; null when it does not decrypt. */
function openBox(box: Buffer, key: Buffer): { plain: Buffer; mac: Buffer } | null {
  if (box.length < 16 + 16 + 20 || (box.length - 36) % 16 !== 0) return null;
  const d = crypto.createDecipheriv('aes-256-cbc', key.subarray(0, 32), box.subarray(0, 16));
  try {
    const plain = Buffer.concat([d.update(box.subarray(16, box.length - 20)), d.final()]);
    return { plain, mac: box.subarray(box.length - 20) };
  } catch {
    return null;
  }
}

/** `type=key:cipher=...:key=K` → K's bytes. */
function keyField(text: string, what: string, file: string): Buffer {
  const m = /(?:^|:)key=([^:"\s]+)/.exec(text);
  if (!m) throw new VmssError(`${file}: ${what} holds no key`);
  return base64Strict(pctDecodeAll(m[1] as string), what, file);
}

/**
 * The configuration key the key safe protects. The HMAC over the decrypted dictionary is what
 * tells a wrong password apart: a wrong one (or a damaged key safe) throws "wrong password".
 */
export function unlockKeySafe(ks: KeySafe, password: string, file: string): Buffer {
  const kek = crypto.pbkdf2Sync(Buffer.from(password, 'utf8'), ks.salt, ks.rounds, ks.cipher === 'XTS-AES-256' ? 64 : 32, 'sha1');
  const box = openBox(ks.dict, kek);
  const ok = box !== null && crypto.timingSafeEqual(crypto.createHmac('sha1', kek).update(box.plain).digest(), box.mac);
  // A wrong password and a damaged key safe look the same here: both fail the HMAC.
  if (!ok || !box) throw new VmssError(`${file}: wrong password, or the key safe is damaged (its HMAC does not match)`);
  return keyField(box.plain.toString('latin1'), 'the key safe\'s dictionary', file);
}

/**
 * Decrypt `encryption.data` with the configuration key: the text of the VM's real .vmx (an
 * encrypted VM's plain .vmx keeps only a few keys; the rest of its configuration is in here).
 * It holds the data files' key: a secret, never to be shown.
 */
export function decryptConfig(encryptionData: string, configKey: Buffer, file: string): string {
  const box = openBox(base64Strict(pctDecodeAll(encryptionData.trim()), 'encryption.data', file), configKey);
  if (!box) throw new VmssError(`${file}: encryption.data does not decrypt with the key safe's key`);
  return box.plain.toString('utf8');
}

/** The data files' key in the decrypted configuration (decryptConfig's text). */
export function dataFileKeyFromConfig(config: string, file: string): Buffer {
  const vmx = parseDictionary(config).values;
  const dfk = vmx.get('datafilekey');
  if (!dfk) throw new VmssError(`${file}: the encrypted configuration holds no dataFileKey`);
  const key = keyField(pctDecodeAll(dfk), 'dataFileKey', file);
  if (key.length < 32) throw new VmssError(`${file}: dataFileKey is ${key.length} bytes, not 32 or more`);
  // Named XTS-AES-256, but the data files use its first 32 bytes as an AES-256-CBC key.
  return Buffer.from(key.subarray(0, 32));
}

/** Decrypt `encryption.data` (the VM's real .vmx) with the configuration key; return the data files' key. */
export function dataFileKeyFromVmx(encryptionData: string, configKey: Buffer, file: string): Buffer {
  return dataFileKeyFromConfig(decryptConfig(encryptionData, configKey, file), file);
}
