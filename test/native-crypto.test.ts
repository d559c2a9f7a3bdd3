import { expect } from 'chai';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { encryptFile } from './kit/encrypted-vm';
import { decryptPagesNative } from '../src/io/native-crypto';
import { scratchDir } from './helpers/paths';
import { runCommand } from './helpers/run';

const READ = path.join(__dirname, 'helpers', 'encobj-read.js');
const KEY = Buffer.alloc(32, 9);

describe('encobj pages decrypted in the addon with Node\'s own OpenSSL', function () {
  this.timeout(60_000);
  const scratch = scratchDir('vmssfs-native-crypto-');
  let plain: Buffer;
  let enc: Buffer;
  let file: string;
  before(() => {
    plain = Buffer.alloc(4064 * 40 + 777);
    for (let i = 0; i < plain.length; i++) plain[i] = (i * 197 + (i >> 10)) & 0xff;
    const p = scratch.named('plain.bin');
    file = scratch.named('enc.bin');
    fs.writeFileSync(p, plain);
    encryptFile(p, file, KEY, { version: 2 });
    enc = fs.readFileSync(file);
  });

  it('decrypts any range of whole and cut pages to the plaintext', () => {
    const raw = enc.subarray(4096);
    const pages = Math.floor(raw.length / 4096);
    for (const [from, n] of [[0, 4064], [0, plain.length], [5, 10], [4060, 8], [4064 * 3, 4064 * 7], [4064 * 2 + 100, 4064 * 20 + 5], [plain.length - 1, 1], [17, 0]] as const) {
      const dst = Buffer.alloc(n + 3, 0xee);
      expect(decryptPagesNative(KEY, raw, pages, from, n, dst, 3), `${from}+${n}`).to.equal(true);
      expect(dst.subarray(3).equals(plain.subarray(from, from + n)), `${from}+${n}`).to.equal(true);
      expect(dst.subarray(0, 3).equals(Buffer.alloc(3, 0xee)), 'nothing written before dstOffset').to.equal(true);
    }
  });

  it('checks every index it is given', () => {
    const raw = enc.subarray(4096, 4096 + 4 * 4096);
    const dst = Buffer.alloc(4 * 4064);
    expect(() => decryptPagesNative(KEY.subarray(1), raw, 1, 0, 1, dst, 0)).to.throw(RangeError, /key is not 32 bytes/);
    expect(() => decryptPagesNative(KEY, raw, 5, 0, 1, dst, 0)).to.throw(RangeError, /pages = 5 is not an integer in \[0, 4\]/);
    expect(() => decryptPagesNative(KEY, raw, 1, 0, 4065, dst, 0)).to.throw(RangeError, /n = 4065/);
    expect(() => decryptPagesNative(KEY, raw, 1, 0, 10, dst, dst.length - 5)).to.throw(RangeError, /do not fit/);
    expect(() => decryptPagesNative(KEY, raw, 1, 0, 10, raw, 100)).to.throw(RangeError, /overlap/);
  });

  it('reads the plaintext the same through the native and the JavaScript decryption', async () => {
    const ranges: [number, number][] = [[0, 10], [4060, 10], [4064 * 5 + 3, 4064 * 12], [0, plain.length], [plain.length - 7, 100]];
    const want = ranges.flatMap(([pos, len]) => {
      const h = createHash('sha256').update(plain.subarray(pos, pos + len)).digest('hex');
      return [h, h];
    });
    for (const env of [{}, { VMSSFS_NATIVE: '0' }]) {
      const r = await runCommand(process.execPath, [READ, file, KEY.toString('hex'), JSON.stringify(ranges)], { env: { ...process.env, ...env } });
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout.trim().split('\n'), JSON.stringify(env)).to.deep.equal(want);
    }
  });
});
