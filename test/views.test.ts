import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cpuRegisters, writeSnapshot, type CpuLayout, type SnapshotOptions, type WrittenSnapshot } from './kit/writer';
import { PageCache } from '../src/cache/pagecache';
import type { Snapshot } from '../src/evidence/evidence';
import { openSnapshot } from '../src/evidence/snapshot';
import { buildTree, type Tree } from '../src/tree/build';
import type { FileNode } from '../src/tree/nodes';
import { tempDir } from './helpers/paths';

// The readers below are written from the LiME and ELF specifications, not from src/tree/views: the
// point is that an independent parser finds in the views what the writer put in the snapshot.

const PAGE = 4096;

interface PhysRecord { start: number; data: Buffer }

/** LiME: per range, u32 magic "EMiL", u32 version 1, u64 start, u64 inclusive end, 8 reserved bytes, data. */
function parseLime(b: Buffer): PhysRecord[] {
  const out: PhysRecord[] = [];
  let o = 0;
  while (o < b.length) {
    expect(b.length - o, 'room for a header').to.be.at.least(32);
    expect(b.readUInt32LE(o), `magic at ${o}`).to.equal(0x4c694d45);
    expect(b.readUInt32LE(o + 4), 'version').to.equal(1);
    const start = Number(b.readBigUInt64LE(o + 8));
    const end = Number(b.readBigUInt64LE(o + 16));
    expect(b.subarray(o + 24, o + 32).equals(Buffer.alloc(8)), 'reserved bytes').to.equal(true);
    const len = end - start + 1;
    expect(o + 32 + len, 'record within the file').to.be.at.most(b.length);
    out.push({ start, data: b.subarray(o + 32, o + 32 + len) });
    o += 32 + len;
  }
  return out;
}

interface Phdr { type: number; flags: number; offset: number; vaddr: number; paddr: number; filesz: number; memsz: number; align: number }
interface Note { name: string; type: number; desc: Buffer }
interface Elf { type: number; machine: number; phdrs: Phdr[]; notes: Note[] }

/** ELF64 little-endian: header, program headers (with PN_XNUM), notes of every PT_NOTE. */
function parseElf(b: Buffer): Elf {
  expect(b.subarray(0, 4).toString('latin1')).to.equal('\x7fELF');
  expect(b[4], 'ELFCLASS64').to.equal(2);
  expect(b[5], 'ELFDATA2LSB').to.equal(1);
  expect(b[6], 'EI_VERSION').to.equal(1);
  expect(b.readUInt32LE(20), 'e_version').to.equal(1);
  expect(b.readUInt16LE(52), 'e_ehsize').to.equal(64);
  expect(b.readUInt16LE(54), 'e_phentsize').to.equal(56);
  const phoff = Number(b.readBigUInt64LE(32));
  let phnum = b.readUInt16LE(56);
  if (phnum === 0xffff) {
    const shoff = Number(b.readBigUInt64LE(40));
    phnum = b.readUInt32LE(shoff + 44);
  }
  const phdrs: Phdr[] = [];
  for (let i = 0; i < phnum; i++) {
    const o = phoff + 56 * i;
    const u64 = (k: number): number => Number(b.readBigUInt64LE(o + k));
    phdrs.push({ type: b.readUInt32LE(o), flags: b.readUInt32LE(o + 4), offset: u64(8), vaddr: u64(16), paddr: u64(24), filesz: u64(32), memsz: u64(40), align: u64(48) });
  }
  const notes: Note[] = [];
  for (const p of phdrs.filter((h) => h.type === 4)) {
    let o = p.offset;
    const end = p.offset + p.filesz;
    const pad4 = (n: number): number => (n + 3) & ~3;
    while (o < end) {
      const namesz = b.readUInt32LE(o);
      const descsz = b.readUInt32LE(o + 4);
      const type = b.readUInt32LE(o + 8);
      const name = b.subarray(o + 12, o + 12 + namesz).toString('latin1').replace(/\0$/, '');
      const descAt = o + 12 + pad4(namesz);
      notes.push({ name, type, desc: b.subarray(descAt, descAt + descsz) });
      o = descAt + pad4(descsz);
    }
    expect(o, 'notes fill their segment').to.equal(end);
  }
  return { type: b.readUInt16LE(16), machine: b.readUInt16LE(18), phdrs, notes };
}

/** struct user_regs_struct (x86_64), in order. */
const PR_REG = ['r15', 'r14', 'r13', 'r12', 'rbp', 'rbx', 'r11', 'r10', 'r9', 'r8', 'rax', 'rcx', 'rdx', 'rsi', 'rdi',
  'orig_rax', 'rip', 'cs', 'eflags', 'rsp', 'ss', 'fs_base', 'gs_base', 'ds', 'es', 'fs', 'gs'];

/** What the writer put in the cpu group for vCPU c, under user_regs_struct's names. */
function expectedRegs(w: WrittenSnapshot, c: number): Map<string, bigint> {
  const regs = new Map<string, bigint>();
  const inline = (key: string): bigint => {
    const v = w.tag(key).inline as Buffer;
    return v.length === 8 ? v.readBigUInt64LE(0) : BigInt(v.readUIntLE(0, v.length));
  };
  regs.set('rip', inline(`cpu/rip[${c}]`));
  regs.set('eflags', inline(`cpu/eflags[${c}]`));
  ['es', 'cs', 'ss', 'ds', 'fs', 'gs'].forEach((s, k) => regs.set(s, inline(`cpu/S[${c}][${k}]`)));
  regs.set('fs_base', inline(`cpu/S.base64[${c}][4]`));
  regs.set('gs_base', inline(`cpu/S.base64[${c}][5]`));
  const gp = w.tag(`cpu/gpregs[${c}]`);
  const raw = Buffer.alloc(128);
  const fd = fs.openSync(w.path, 'r');
  try {
    fs.readSync(fd, raw, 0, 128, gp.dataOffset);
  } finally {
    fs.closeSync(fd);
  }
  ['rax', 'rcx', 'rdx', 'rbx', 'rsp', 'rbp', 'rsi', 'rdi', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15']
    .forEach((r, i) => regs.set(r, raw.readBigUInt64LE(8 * i)));
  return regs;
}

/** A whole file of the tree, read in odd-sized pieces so reads straddle headers, runs and chunks. */
async function readAll(node: FileNode): Promise<Buffer> {
  const out = Buffer.alloc(node.size);
  for (let pos = 0; pos < node.size; ) {
    const n = await node.read(out.subarray(pos), pos, Math.min(5003, node.size - pos));
    expect(n, `read at ${pos}`).to.be.greaterThan(0);
    pos += n;
  }
  return out;
}

function fileAt(tree: Tree, p: string): FileNode {
  const n = tree.lookup(p);
  if (!n || n.kind !== 'file') throw new Error(`${p} is not a file of the tree`);
  return n;
}

/** Guest-physical memory [0, size) rebuilt from (start, bytes) records; everything else zeros. */
function flatten(records: PhysRecord[], size: number): Buffer {
  const flat = Buffer.alloc(size);
  for (const r of records) r.data.copy(flat, r.start);
  return flat;
}

/** Three runs given out of order, holes between them, and a blob page that no region maps. */
const SMALL: SnapshotOptions = {
  memory: 'embedded',
  blobPages: 8,
  regions: [
    { ppn: 16, pageNum: 0, pages: 2 },
    { ppn: 0, pageNum: 2, pages: 3 },
    { ppn: 5, pageNum: 6, pages: 1 },
  ],
  vcpus: 3,
};

describe('views: physmem.lime and physmem.elf', function () {
  this.timeout(60_000);
  const tmp = tempDir('vmssfs-views-');
  const open: Snapshot[] = [];
  after(() => {
    for (const s of open) s.close();
    tmp.cleanup();
  });

  function load(name: string, opts: SnapshotOptions, patch?: (w: WrittenSnapshot) => void): { w: WrittenSnapshot; tree: Tree } {
    const w = writeSnapshot(path.join(tmp.dir, `${name}.vmss`), opts);
    patch?.(w);
    const snap = openSnapshot(w.path);
    open.push(snap);
    // Small, odd-sized chunks: reads cross chunk boundaries inside runs.
    return { w, tree: buildTree(snap, new PageCache({ chunkSize: 3000, maxBytes: 64 * 1024 })) };
  }

  describe('a small layout: three runs out of order with holes, three vCPUs', () => {
    let w: WrittenSnapshot;
    let tree: Tree;
    let raw: Buffer;
    let lime: Buffer;
    let elf: Buffer;
    before(async () => {
      ({ w, tree } = load('small', SMALL));
      raw = await readAll(fileAt(tree, 'physmem.raw'));
      lime = await readAll(fileAt(tree, 'physmem.lime'));
      elf = await readAll(fileAt(tree, 'physmem.elf'));
    });

    it('LiME: one header per run, matching the run map, then exactly the run\'s bytes', () => {
      const records = parseLime(lime);
      expect(records.map((r) => [r.start, r.data.length])).to.deep.equal(w.runs.map((r) => [r.physAddr, r.length]));
      for (const r of records) expect(r.data.equals(w.readPhys(r.start, r.data.length)), `run at ${r.start}`).to.equal(true);
      expect(lime.length).to.equal(w.runs.reduce((n, r) => n + 32 + r.length, 0));
    });

    it('ELF: an x86-64 core with one page-aligned PT_LOAD per run, p_paddr = guest-physical', () => {
      const e = parseElf(elf);
      expect(e.type, 'ET_CORE').to.equal(4);
      expect(e.machine, 'EM_X86_64').to.equal(62);
      expect(e.phdrs.filter((p) => p.type === 4)).to.have.length(1);
      const loads = e.phdrs.filter((p) => p.type === 1);
      expect(loads.map((p) => [p.paddr, p.filesz, p.memsz])).to.deep.equal(w.runs.map((r) => [r.physAddr, r.length, r.length]));
      for (const p of loads) {
        expect(p.offset % PAGE, 'p_offset page-aligned').to.equal(0);
        expect(p.vaddr, 'p_vaddr = p_paddr').to.equal(p.paddr);
        expect(elf.subarray(p.offset, p.offset + p.filesz).equals(w.readPhys(p.paddr, p.filesz)), `run at ${p.paddr}`).to.equal(true);
      }
      const last = loads[loads.length - 1] as Phdr;
      expect(elf.length, 'ends with the last run').to.equal(last.offset + last.filesz);
    });

    it('ELF: one NT_PRSTATUS per vCPU holding the cpu group\'s registers, pr_pid = vCPU + 1', () => {
      const prs = parseElf(elf).notes;
      expect(prs.map((n) => [n.name, n.type, n.desc.length])).to.deep.equal([0, 1, 2].map(() => ['CORE', 1, 336]));
      prs.forEach((n, c) => {
        expect(n.desc.readInt32LE(32), 'pr_pid').to.equal(c + 1);
        const want = expectedRegs(w, c);
        const got = new Map(PR_REG.map((r, i) => [r, n.desc.readBigUInt64LE(112 + 8 * i)]));
        for (const [r, v] of want) expect(got.get(r), `vCPU ${c} ${r}`).to.equal(v);
        // Spot checks against the writer's own constants, in case both sides misread a tag alike.
        expect(got.get('rip'), 'rip').to.equal(0xfffff80002c1c0ban + BigInt(c));
        expect(got.get('rsp'), 'rsp is gpregs slot 4').to.equal(0x1111000000000004n + BigInt(c) * 0x100n);
        expect(got.get('cs'), 'cs is S[c][1]').to.equal(0x10n);
        expect(got.get('orig_rax'), 'orig_rax: not in a syscall').to.equal(0xffffffffffffffffn);
      });
    });

    it('physmem.raw, physmem.lime and physmem.elf agree on every guest-physical byte (holes: zeros, not stored)', () => {
      const fromLime = flatten(parseLime(lime), w.physSize);
      const fromElf = flatten(parseElf(elf).phdrs.filter((p) => p.type === 1).map((p) => ({ start: p.paddr, data: elf.subarray(p.offset, p.offset + p.filesz) })), w.physSize);
      const expected = w.readPhys(0, w.physSize);
      expect(raw.length).to.equal(w.physSize);
      expect(raw.equals(expected), 'physmem.raw').to.equal(true);
      expect(fromLime.equals(raw), 'physmem.lime').to.equal(true);
      expect(fromElf.equals(raw), 'physmem.elf').to.equal(true);
    });

    it('reads of any range of the views match a read of the whole (page cache and extent boundaries)', async () => {
      for (const [name, whole] of [['physmem.lime', lime], ['physmem.elf', elf]] as const) {
        const node = fileAt(tree, name);
        for (const [pos, len] of [[0, 1], [31, 2], [30, 5000], [whole.length - 7, 100], [whole.length, 10]]) {
          const buf = Buffer.alloc(len);
          const n = await node.read(buf, pos, len);
          expect(buf.subarray(0, n).equals(whole.subarray(pos, pos + len)), `${name} at ${pos}+${len}`).to.equal(true);
        }
      }
    });

    it('no notes for a snapshot with full CPU state', () => {
      expect(tree.notes).to.deep.equal([]);
    });
  });

  it('a .vmem whose size is not a page multiple: exact sizes, the next offsets still page-aligned', async () => {
    const { w, tree } = load('odd', { memory: 'vmem', blobPages: 3, vcpus: 1 }, (written) => {
      fs.appendFileSync(written.vmemPath as string, Buffer.alloc(100, 0x5a));
    });
    const size = 3 * PAGE + 100;
    const lime = parseLime(await readAll(fileAt(tree, 'physmem.lime')));
    expect(lime.map((r) => [r.start, r.data.length])).to.deep.equal([[0, size]]);
    expect(lime[0]?.data.subarray(3 * PAGE).equals(Buffer.alloc(100, 0x5a))).to.equal(true);
    const elfBytes = await readAll(fileAt(tree, 'physmem.elf'));
    const load0 = parseElf(elfBytes).phdrs.find((p) => p.type === 1) as Phdr;
    expect([load0.paddr, load0.filesz, load0.offset % PAGE]).to.deep.equal([0, size, 0]);
    expect(elfBytes.length).to.equal(load0.offset + size);
    expect(elfBytes.subarray(load0.offset, load0.offset + 3 * PAGE).equals(w.readPhys(0, 3 * PAGE))).to.equal(true);
  });

  it('no vCPUs: a core without PT_NOTE, and a note in info.txt and metadata.json saying so', async () => {
    const { w, tree } = load('novcpu', { ...SMALL, vcpus: 0 });
    const e = parseElf(await readAll(fileAt(tree, 'physmem.elf')));
    expect(e.phdrs.map((p) => p.type)).to.deep.equal(w.runs.map(() => 1));
    expect(e.notes).to.deep.equal([]);
    expect(tree.notes).to.have.length(1);
    const note = (tree.notes as string[])[0] as string;
    expect(note).to.match(/^physmem\.elf: .*no NT_PRSTATUS/);
    expect((await readAll(fileAt(tree, 'info.txt'))).toString()).to.include(`WARNING: ${note}`);
    const json = JSON.parse((await readAll(fileAt(tree, 'metadata.json'))).toString()) as { warnings: string[] };
    expect(json.warnings).to.include(note);
  });

  it('no memory: neither view exists', () => {
    const { tree } = load('nomem', { memory: 'none', blobPages: 0 });
    expect(tree.lookup('physmem.raw')).to.equal(undefined);
    expect(tree.lookup('physmem.lime')).to.equal(undefined);
    expect(tree.lookup('physmem.elf')).to.equal(undefined);
  });

  it('65535 runs: the ELF header uses extended numbering (e_phnum = PN_XNUM, count in sh_info)', async () => {
    const n = 65535;
    const regions = Array.from({ length: n }, (_, i) => ({ ppn: 2 * i, pageNum: i, pages: 1 }));
    const { w, tree } = load('many', { memory: 'vmem', blobPages: n, regions, vcpus: 1, sparse: true, screenshot: false });
    const node = fileAt(tree, 'physmem.elf');
    // Headers only: 64 + 65536 program headers + one section header + one note.
    const head = Buffer.alloc(64 + 56 * (n + 1) + 64 + 356);
    await node.read(head, 0, head.length);
    expect(head.readUInt16LE(56), 'e_phnum').to.equal(0xffff);
    const e = parseElf(head);
    expect(e.phdrs).to.have.length(n + 1);
    const loads = e.phdrs.filter((p) => p.type === 1);
    expect(loads.map((p) => p.paddr)).to.deep.equal(w.runs.map((r) => r.physAddr));
    const lastLoad = loads[n - 1] as Phdr;
    expect(node.size).to.equal(lastLoad.offset + PAGE);
    const last = Buffer.alloc(PAGE);
    await node.read(last, lastLoad.offset, PAGE);
    expect(last.equals(w.readPhys(lastLoad.paddr, PAGE))).to.equal(true);
  });

  describe('CPU state in either layout real files use: every NT_PRSTATUS field filled', () => {
    const layouts: [CpuLayout, 'eflags' | 'EFLAGS', string][] = [
      ['older', 'EFLAGS', 'older layout: rax[c]..r15[c], CR64[c][n], CR[c][n], IDTR[c][0..2] inline, EFLAGS'],
      ['older', 'eflags', 'older layout with eflags'],
      ['newer', 'eflags', 'newer layout: gpregs[c], CR64[c], IDTR[c] and GDTR[c] as blocks'],
      ['mixed', 'eflags', 'the fixtures\' mixed layout'],
    ];
    for (const [layout, eflagsName, title] of layouts) {
      it(title, async () => {
        const { tree } = load(`cpu-${layout}-${eflagsName}`, { ...SMALL, cpuLayout: layout, eflagsName });
        const prs = parseElf(await readAll(fileAt(tree, 'physmem.elf'))).notes;
        expect(prs.map((n) => [n.name, n.type])).to.deep.equal([0, 1, 2].map(() => ['CORE', 1]));
        prs.forEach((n, c) => {
          const want = cpuRegisters(c);
          const got = new Map(PR_REG.map((r, i) => [r, n.desc.readBigUInt64LE(112 + 8 * i)]));
          for (const r of PR_REG) {
            if (r === 'orig_rax') expect(got.get(r), 'orig_rax: not in a syscall').to.equal(0xffffffffffffffffn);
            else expect(got.get(r), `vCPU ${c} ${r}`).to.equal(want[r]);
          }
        });
        expect(tree.notes, 'nothing missing').to.deep.equal([]);
        const json = JSON.parse((await readAll(fileAt(tree, 'metadata.json'))).toString()) as { vcpus: { index: number; registers: Record<string, string> }[] };
        expect(json.vcpus.map((v) => v.index)).to.deep.equal([0, 1, 2]);
        for (const v of json.vcpus) {
          const want = cpuRegisters(v.index);
          for (const r of ['cr0', 'cr3', 'cr4', 'idtr_base', 'idtr_limit', 'gdtr_base', 'gdtr_limit', 'rsp', 'rip']) {
            expect(v.registers[r], `metadata.json vCPU ${v.index} ${r}`).to.equal('0x' + (want[r] as bigint).toString(16));
          }
        }
      });
    }

    it('damaged register tags: what is there is used, what is not reads as zeros and is named', async () => {
      const { tree } = load('cpu-damaged', { ...SMALL, cpuLayout: 'older' }, (w) => {
        // One byte of a name each: vCPU 1's r9 becomes "rQ", vCPU 2's eflags "eflagQ".
        const fd = fs.openSync(w.path, 'r+');
        try {
          fs.writeSync(fd, Buffer.from('Q'), 0, 1, w.tag('cpu/r9[1]').headerOffset + 3);
          fs.writeSync(fd, Buffer.from('Q'), 0, 1, w.tag('cpu/eflags[2]').headerOffset + 7);
        } finally {
          fs.closeSync(fd);
        }
      });
      const prs = parseElf(await readAll(fileAt(tree, 'physmem.elf'))).notes;
      expect(prs).to.have.length(3);
      const note = (tree.notes ?? []).find((n) => n.includes('registers missing')) as string;
      expect(note, String(tree.notes)).to.be.a('string');
      expect(note).to.include('vCPU 1: cpu/r9[1]');
      expect(note).to.include('vCPU 2: cpu/eflags[2]');
      const regs1 = new Map(PR_REG.map((r, i) => [r, prs[1]?.desc.readBigUInt64LE(112 + 8 * i)]));
      expect(regs1.get('r9'), 'r9 of vCPU 1: zeros').to.equal(0n);
      expect(regs1.get('rip'), 'rip of vCPU 1: still read').to.equal(cpuRegisters(1).rip);
    });
  });
});
