import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { damagedBlocks, decodeJs, decodeNative, difference, intactBlocks, type BlockCase } from './kit/fastlz-cases';
import { Rng } from '../scripts/fuzz';
import { FastLzError, NEEDS_HISTORY, fastLzDecode } from '../src/io/fastlz';
import { decodeBlock, decodeBlockAsync, decoderInUse } from '../src/io/native-decoder';
import { scratchDir } from './helpers/paths';
import { runCommand } from './helpers/run';

const CHECK = path.join(__dirname, 'helpers', 'decode-check.js');

interface CheckReport {
  decoder: string;
  cases: number;
  differences: string[];
  outcomes: string[];
}

/** Run the decode check in a process of its own, with this environment. */
async function check(env: NodeJS.ProcessEnv, count: number, seed: number): Promise<CheckReport> {
  const r = await runCommand(process.execPath, [CHECK, String(count), String(seed)], { env: { ...process.env, ...env } });
  expect(r.code, r.stderr).to.equal(0);
  return JSON.parse(r.stdout) as CheckReport;
}

describe('the native FastLZ decoder: the JavaScript decoder\'s contract, in C', function () {
  this.timeout(120_000);
  const scratch = scratchDir('vmssfs-decoder-');
  const { blocks, stats } = intactBlocks();

  it('is the addon\'s (make build builds it)', () => {
    expect(decoderInUse()).to.match(/^native \(/);
  });

  it('decodes the encoder\'s blocks byte-exact: matches across blocks, far, overlapping and long, sync and on the thread pool', async () => {
    const sum = (k: 'farMatches' | 'overlapping' | 'longMatches' | 'crossBlock'): number => stats.reduce((a, s) => a + s[k], 0);
    expect(sum('farMatches'), 'far matches (distance 8192 and more)').to.be.above(10);
    expect(sum('overlapping'), 'matches overlapping their output').to.be.above(10);
    expect(sum('longMatches'), 'length escapes').to.be.above(10);
    expect(sum('crossBlock'), 'matches into an earlier block').to.be.above(10);
    for (const c of blocks) {
      for (const async of [false, true]) {
        const native = await decodeNative(c, async);
        expect(difference(decodeJs(c), native), c.what).to.equal(null);
        expect('out' in native && native.out.subarray(c.history.length).equals(c.expected), c.what).to.equal(true);
      }
    }
  });

  it('reads zeros before the stream\'s start when the caller prefills them, and needs history when not', () => {
    const zero = blocks.filter((b) => b.what.startsWith('zero-window'));
    expect(zero).to.have.length.above(0);
    for (const c of zero) {
      const out = Buffer.alloc(c.history.length + c.size);
      expect(decodeBlock(c.payload, 0, out, c.history.length, out.length, 0, true)).to.equal(c.size);
      expect(out.subarray(0, 3 * 4096).equals(Buffer.alloc(3 * 4096))).to.equal(true);
      expect(out.subarray(c.history.length).equals(c.expected)).to.equal(true);
      // The block's first matches reach into the window: without it, both decoders ask for history.
      expect(decodeBlock(c.payload, 0, out, c.history.length, out.length, c.history.length, true)).to.equal(NEEDS_HISTORY);
      expect(fastLzDecode(c.payload, 0, out, c.history.length, out.length, c.history.length, true)).to.equal(NEEDS_HISTORY);
    }
  });

  it('stops at a token boundary at or after a position, and resumes there to the same bytes', async () => {
    for (const c of blocks) {
      for (const frac of [0, 0.25, 0.5, 0.9, 1]) {
        const at = c.history.length + Math.floor(c.size * frac);
        const jsStop = { at, ip: -1, op: -1 };
        const first = Buffer.alloc(c.history.length + c.size);
        c.history.copy(first);
        fastLzDecode(c.payload, 0, first, c.history.length, first.length, 0, true, jsStop);
        for (const async of [false, true]) {
          const out = Buffer.alloc(c.history.length + c.size);
          c.history.copy(out);
          const stop = { at, ip: -1, op: -1 };
          const made = async
            ? await decodeBlockAsync(c.payload, 0, out, c.history.length, out.length, 0, true, stop)
            : decodeBlock(c.payload, 0, out, c.history.length, out.length, 0, true, stop);
          expect(stop, c.what).to.deep.equal(jsStop);
          expect(stop.op, c.what).to.be.at.least(Math.min(at, out.length));
          expect(made).to.equal(stop.op - c.history.length);
          // Resume: the next token is a plain control byte, the window is what is decoded so far.
          if (stop.ip < c.payload.length) expect(decodeBlock(c.payload, stop.ip, out, stop.op, out.length, 0, false)).to.equal(out.length - stop.op);
          expect(out.subarray(c.history.length).equals(c.expected), `${c.what} resumed at ${stop.op}`).to.equal(true);
        }
      }
    }
  });

  it('reports every kind of damage in the JavaScript decoder\'s words, sync and on the thread pool', async () => {
    const cases: [string, Buffer, number, RegExp | typeof NEEDS_HISTORY, number?][] = [
      ['no bytes', Buffer.alloc(0), 4, /^empty block$/],
      ['a resume point at the end', Buffer.from([0x00, 0x41]), 4, /^no tokens to decode$/, 2],
      ['a first token that is not a literal run', Buffer.from([0x60, 1, 2]), 10, /^first control byte 0x60 is not a level-2 literal run$/],
      ['a literal run past the block\'s end', Buffer.from([0x05, 1, 2]), 6, /^literal run of 6 bytes runs past the block's end$/],
      ['a literal run past the block\'s size', Buffer.from([0x03, 1, 2, 3, 4]), 2, /^literal run overruns the block's 2 bytes$/],
      ['a length escape cut off', Buffer.from([0x00, 0x41, 0xe0, 255, 255]), 600, /^match length runs past the block's end$/],
      ['a distance cut off', Buffer.from([0x00, 0x41, 0x20]), 4, /^match distance runs past the block's end$/],
      ['a far distance cut off', Buffer.from([0x00, 0x41, 0x3f, 0xff, 0x00]), 4, /^far match distance runs past the block's end$/],
      ['a match past the block\'s size', Buffer.from([0x00, 0x41, 0x20, 0x00]), 2, /^match overruns the block's 2 bytes$/],
      ['a block that ends short', Buffer.from([0x00, 0x41]), 5, /^block decoded to 1 bytes, its header says 5$/],
      ['a match before the history', Buffer.from([0x00, 0x41, 0x20, 0x05]), 4, NEEDS_HISTORY],
    ];
    for (const [what, input, size, want, ip0] of cases) {
      const c: BlockCase = { what, payload: input, history: Buffer.alloc(0), size, historyStart: 0, ip0: ip0 ?? 0, atBlockStart: ip0 === undefined, stopAt: null, expected: Buffer.alloc(0) };
      const js = decodeJs(c);
      if (want === NEEDS_HISTORY) expect('produced' in js && js.produced, what).to.equal(NEEDS_HISTORY);
      else expect('damaged' in js && js.damaged, what).to.match(want);
      for (const async of [false, true]) expect(difference(js, await decodeNative(c, async)), what).to.equal(null);
    }
    // The wrappers throw the one error class the JavaScript decoder throws.
    expect(() => decodeBlock(Buffer.from([0x60]), 0, Buffer.alloc(4), 0, 4, 0, true)).to.throw(FastLzError, /not a level-2 literal run/);
    let rejected: unknown = null;
    await decodeBlockAsync(Buffer.from([0x05, 1]), 0, Buffer.alloc(6), 0, 6, 0, true).catch((e: unknown) => (rejected = e));
    expect(rejected).to.be.instanceOf(FastLzError);
  });

  it('agrees with the JavaScript decoder on damaged blocks: the same bytes, or the same failure', async () => {
    const failures = new Set<string>();
    let i = 0;
    for (const c of damagedBlocks(new Rng(20261202), 1500, blocks)) {
      const js = decodeJs(c);
      failures.add('damaged' in js ? (js.damaged.split(' ')[0] as string) + ' ' + (js.damaged.split(' ')[1] as string) : String(Math.sign(js.produced)));
      expect(difference(js, await decodeNative(c, i++ % 2 === 1)), c.what).to.equal(null);
    }
    // Decoded, needing history, and damaged in several ways.
    expect([...failures]).to.include.members(['1', '-1', 'literal run', 'match overruns', 'block decoded', 'first control', 'empty block']);
  });

  it('checks every index it is given before decoding', () => {
    const input = Buffer.from([0x00, 0x41]);
    const out = Buffer.alloc(8);
    expect(() => decodeBlock(input, 0, out, 0, 9, 0, true)).to.throw(RangeError, /outEnd = 9 is not an integer in \[0, 8\]/);
    expect(() => decodeBlock(input, 0, out, 5, 4, 0, true)).to.throw(RangeError, /outStart = 5 is not an integer in \[0, 4\]/);
    expect(() => decodeBlock(input, 0, out, 2, 4, 3, true)).to.throw(RangeError, /historyStart = 3/);
    expect(() => decodeBlock(input, -1, out, 0, 1, 0, true)).to.throw(RangeError, /ip0 = -1/);
    expect(() => decodeBlock(input, 0.5, out, 0, 1, 0, true)).to.throw(RangeError, /ip0 = 0.5/);
    expect(() => decodeBlock(input, 0, out, 0, 1, 0, true, { at: -5, ip: 0, op: 0 })).to.throw(RangeError, /stopAt = -5/);
    const shared = Buffer.alloc(64);
    expect(() => decodeBlock(shared.subarray(0, 8), 0, shared.subarray(4, 20), 0, 16, 0, true)).to.throw(RangeError, /input and out overlap/);
    expect(() => decodeBlock('x' as unknown as Buffer, 0, out, 0, 1, 0, true)).to.throw(TypeError, /input is not a Buffer/);
  });

  it('falls back to the JavaScript decoder when the addon is turned off or cannot load', async () => {
    const off = await check({ VMSSFS_NATIVE: '0' }, 200, 3);
    expect(off.decoder).to.equal('JavaScript (turned off by VMSSFS_NATIVE=0)');
    expect(off.differences).to.deep.equal([]);
    const bogus = scratch.named('not-an-addon.node');
    fs.writeFileSync(bogus, 'not a shared object\n');
    const broken = await check({ VMSSFS_NATIVE_ADDON: bogus }, 200, 3);
    expect(broken.decoder).to.match(/^JavaScript \(.*not-an-addon\.node/);
    expect(broken.differences).to.deep.equal([]);
    expect(broken.cases).to.equal(off.cases);
  });
});
