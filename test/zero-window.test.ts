import { expect } from 'chai';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { compressStream } from './kit/fastlz';
import { BlockStreamSource } from '../src/io/blockstream';
import { BufferSource } from '../src/io/source';
import { writeVmFolder, type VmFolder } from './helpers/encrypted';
import { TestMount } from './helpers/mount';
import { BIN, tempDir } from './helpers/paths';
import { runCli, runCommand } from './helpers/run';
import { guestLikeMemory } from './kit/fastlz-cases';

/** The first token after block 0's one-byte literal: its length and distance. */
function secondToken(payload: Buffer): { len: number; dist: number } {
  let ip = 2;
  const ctrl = payload[ip++] as number;
  let len = (ctrl >> 5) + 2;
  if (len === 9) {
    let b: number;
    do {
      b = payload[ip++] as number;
      len += b;
    } while (b === 255);
  }
  const lo = payload[ip++] as number;
  const dist = (ctrl & 31) === 31 && lo === 255 ? 8192 + (((payload[ip] as number) << 8) | (payload[ip + 1] as number)) : (((ctrl & 31) << 8) | lo) + 1;
  return { len, dist };
}

const sha256 = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex');

describe('the zero window: references before the stream\'s start read zeros, as VMware\'s decoder has them', function () {
  this.timeout(180_000);

  it('the encoder writes zero memory at the start as VMware does: block 0 is a one-byte literal, then a match reaching before the stream\'s start', () => {
    // Page 0 of guest-like memory (and every eighth) is zeros, as a guest's first page is.
    const { bytes, stats } = compressStream(guestLikeMemory(64));
    const payload = bytes.subarray(16, 16 + bytes.readUInt32LE(8));
    expect(payload[0], 'a one-byte literal run').to.equal(0x20);
    expect(payload[1], 'of a zero').to.equal(0);
    const t = secondToken(payload);
    expect(t.dist, 'the match starts before byte 0').to.be.greaterThan(1);
    expect(t.len, 'and covers the rest of the zero page').to.equal(4095);
    expect(stats.zeroWindow).to.be.greaterThan(0);
  });

  it('such a stream decodes byte-exact, from the start, from far into it, and in any order', async () => {
    const plain = guestLikeMemory(3072);
    for (const bs of [4 * 1024 * 1024, 64 * 1024, 20000]) {
      const stream = compressStream(plain, bs).bytes;
      const src = new BlockStreamSource(new BufferSource('z.vmem', stream));
      const whole = Buffer.alloc(plain.length);
      expect(src.readAtSync(whole, 0)).to.equal(plain.length);
      expect(sha256(whole), `block size ${bs}, read whole`).to.equal(sha256(plain));
      for (const pos of [plain.length - 4096, 0, 8 * 1024 * 1024 + 5, 4096, 100]) {
        const fresh = new BlockStreamSource(new BufferSource('z.vmem', stream));
        const b = Buffer.alloc(4096);
        const n = await fresh.read(b, 0, 4096, pos);
        expect(b.subarray(0, n).equals(plain.subarray(pos, pos + n)), `block size ${bs}, a first read at ${pos}`).to.equal(true);
      }
    }
  });

  for (const encrypt of [false, true]) {
    describe(`mounted, ${encrypt ? 'encrypted and compressed' : 'compressed'}`, () => {
      const tmp = tempDir('vmssfs-zerowin-');
      let vm: VmFolder;
      let m: TestMount | null = null;
      before(() => {
        vm = writeVmFolder(tmp.dir, { encrypt, compress: true, blobPages: 4096 });
        expect(vm.stats?.zeroWindow, 'the stream begins in the zero window').to.be.greaterThan(0);
      });
      after(async () => {
        await m?.unmount();
        tmp.cleanup();
      });

      it('physmem.raw read through the mount with cat, and vmssfs cat, are the plaintext byte for byte', async () => {
        const want = sha256(fs.readFileSync(vm.plain.vmemPath as string));
        const keys = encrypt ? ['--password-file', vm.passwordFile] : [];
        m = await TestMount.start(vm.meta, keys);
        const viaMount = await runCommand('sh', ['-c', 'cat "$1" | sha256sum', 'sh', m.path('physmem.raw')], { timeoutMs: 120_000 });
        expect(viaMount.code, viaMount.stderr).to.equal(0);
        expect(viaMount.stdout.split(' ')[0]).to.equal(want);
        const viaCat = await runCommand('bash', ['-c', 'set -o pipefail; "$@" | sha256sum', 'sh', process.execPath, BIN, 'cat', ...keys, vm.meta, 'physmem.raw'], { timeoutMs: 120_000 });
        expect(viaCat.stderr).to.equal('');
        expect(viaCat.code).to.equal(0);
        expect(viaCat.stdout.split(' ')[0]).to.equal(want);
        const info = await runCli(['info', ...keys, vm.meta]);
        expect(info.stdout).to.not.match(/WARNING/);
      });
    });
  }
});
