import { vcpuJson } from '../format/cpu';
import { magicName, tagValueText, tagPath } from '../format/checkpoint';
import { hex } from '../format/integers';
import type { Tag } from '../format/tags';
import type { CompressionSummary, EncryptionSummary, Snapshot } from './evidence';
import { docText, groupedDoc, type TextDoc } from './textdoc';

/** The machine contract of `vmssfs info --json` and of the mount's metadata.json. */
export interface InfoJson {
  file: string;
  magic: number;
  version: number;
  memoryFile: string | null;
  physmem: { size: number; runs: { physAddr: number; fileOffset: number; length: number; file: string }[] } | null;
  physmemError: string | null;
  /** Present only when a file was decrypted: cipher, rounds, which .vmx; never a password or key. */
  encryption?: EncryptionSummary;
  /** Present only when the memory file is VMware's compressed block container. */
  compression?: CompressionSummary;
  warnings: string[];
  /** Each vCPU's registers as the checkpoint holds them (0x-hex strings), as physmem.elf serves them. */
  vcpus: ReturnType<typeof vcpuJson>[];
  groups: {
    name: string;
    tagsOffset: number;
    size: number | null;
    tags: {
      name: string;
      indices: number[];
      dataOffset: number;
      size: number;
      memSize: number;
      block: boolean;
      compressed: boolean;
      value: string | null;
    }[];
  }[];
}

type TagJson = InfoJson['groups'][number]['tags'][number];

/** One tag as the JSON contract shows it; `value` is exactly the text form's value column. */
function tagJson(t: Tag): TagJson {
  return {
    name: t.name, indices: t.indices, dataOffset: t.dataOffset, size: t.size, memSize: t.memSize,
    block: t.block, compressed: t.compressed, value: tagValueText(t),
  };
}

export function infoJson(s: Snapshot): InfoJson {
  const cp = s.checkpoint;
  return {
    file: cp.file,
    magic: cp.magic,
    version: cp.version,
    memoryFile: s.memoryPath,
    physmem: s.physmem && {
      size: s.physmem.size,
      runs: s.physmem.map.segments.map((r) => ({ physAddr: r.start, fileOffset: r.fileOffset, length: r.length, file: s.physmem!.file.name })),
    },
    physmemError: s.physmemError,
    ...(s.encryption ? { encryption: s.encryption } : {}),
    ...(s.compression ? { compression: s.compression } : {}),
    warnings: s.warnings,
    vcpus: s.cpuState().vcpus.map(vcpuJson),
    groups: cp.groups.map((g) => ({
      name: g.name,
      tagsOffset: g.tagsOffset,
      size: g.size,
      tags: g.tags.map(tagJson),
    })),
  };
}

/**
 * The JSON document: indented like JSON.stringify(doc, null, 2), but one line per tag. A
 * checkpoint holds tens of thousands of tags; a tag per line keeps the text a third the size and
 * greppable, and it is made a line at a time instead of as one large object first.
 */
export function infoJsonDoc(s: Snapshot): TextDoc {
  const groups = s.checkpoint.groups;
  // Everything but the groups, as JSON.stringify indents it (undefined members are left out).
  const head = { ...infoJson({ ...s, warnings: [...s.warnings], checkpoint: { ...s.checkpoint, groups: [] } }), groups: undefined };
  const headText = JSON.stringify(head, null, 2).replace(/\n}$/, ',') + '\n  "groups": [\n';
  return groupedDoc({
    head: () => headText,
    counts: groups.map((g) => g.tags.length),
    open: (gi) => {
      const g = groups[gi] as (typeof groups)[number];
      return `    {\n      "name": ${JSON.stringify(g.name)},\n      "tagsOffset": ${g.tagsOffset},\n      "size": ${JSON.stringify(g.size)},\n`
        + (g.tags.length === 0 ? '      "tags": []\n' : '      "tags": [\n');
    },
    tag: (gi, ti) => {
      const tags = (groups[gi] as (typeof groups)[number]).tags;
      return `        ${JSON.stringify(tagJson(tags[ti] as Tag))}${ti < tags.length - 1 ? ',' : ''}\n`;
    },
    close: (gi) => ((groups[gi] as (typeof groups)[number]).tags.length > 0 ? '      ]\n' : '') + (gi < groups.length - 1 ? '    },\n' : '    }\n'),
    tail: () => '  ]\n}\n',
  });
}

/** The JSON document as one string. */
export function infoJsonText(s: Snapshot): string {
  return docText(infoJsonDoc(s));
}

/** The line saying which files were decrypted and how the key was found: never the key or the password. */
export function encryptionText(e: EncryptionSummary): string {
  const how = e.keyFrom === '--key' ? 'with the data file key given (--key)' : `with the key safe of ${e.vmx} (${e.cipher}, ${e.rounds} PBKDF2 rounds) and the password`;
  return `Encrypted: ${e.files.join(', ')} decrypted ${how}`;
}

/** Verbose hexdumps stop here per tag: a multi-MiB video RAM block helps nobody on a terminal. */
export const HEXDUMP_LIMIT = 64 * 1024;

/** vmwareinfo's hexdump rows: `0x%08x  hh hh ..   ascii`. */
export function hexdump(data: Buffer, base: number): string[] {
  const rows: string[] = [];
  for (let i = 0; i < data.length; i += 16) {
    const row = data.subarray(i, i + 16);
    const bytes = [...row].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    // As vmwareinfo (and the article) shows it: printable and not whitespace, else '.' (a space too).
    const text = [...row].map((b) => (b > 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    rows.push(`${hex(base + i, 8)}  ${bytes.padEnd(47)}   ${text}`);
  }
  return rows;
}

function isMemoryTag(group: string, tag: Tag): boolean {
  return group === 'memory' && tag.name === 'Memory';
}

/**
 * The text form, in the layout of Volatility's vmwareinfo (see the reference article): header,
 * run table, one row per tag (1/2-byte values decimal, 4/8-byte hex), then warnings.
 */
export function infoTextDoc(s: Snapshot, opts: { verbose?: boolean } = {}): TextDoc {
  const cp = s.checkpoint;
  const head: string[] = [
    `Magic: ${hex(cp.magic)} (Version ${cp.version})`,
    `Group count: ${hex(cp.groups.length)}`,
    '',
    'File Offset PhysMem Offset Size      ',
    '----------- -------------- ----------',
  ];
  for (const r of s.physmem?.map.segments ?? []) head.push(`${hex(r.fileOffset, 9)} ${hex(r.start, 12)} ${hex(r.length, 8)}`);
  head.push('', `DataOffset   DataSize ${'Name'.padEnd(50)} Value`, `---------- ---------- ${'-'.repeat(49)} -----`);
  // Beyond vmwareinfo: what the file is and whether its memory can be served.
  const tail: string[] = ['', `File: ${cp.file} (${cp.fileSize} bytes, magic ${magicName(cp.magic)})`];
  if (s.physmem) {
    tail.push(`Memory file: ${s.physmem.file.name}`, `Physical memory: ${hex(s.physmem.size)} bytes in ${s.physmem.map.segments.length} runs`);
  } else {
    tail.push(`Physical memory: not served: ${s.physmemError ?? 'unknown reason'}`);
  }
  if (s.encryption) tail.push(encryptionText(s.encryption));
  if (s.compression) {
    const c = s.compression;
    tail.push(`Compressed memory: ${c.file} holds ${c.blocks} blocks, ${c.storedBytes} bytes stored, ${c.decompressedBytes} bytes decompressed (FastLZ level 2)`);
  }
  for (const w of s.warnings) tail.push(`WARNING: ${w}`);
  const lines = (l: string[]): string => l.join('\n') + '\n';
  const headText = lines(head);
  const tailText = lines(tail);

  const row = (g: string, t: Tag): string => {
    // DataOffset and DataSize share 21 columns, so an offset past 4 GiB (the article's
    // 0x180011963) eats into the size's padding and the name and value keep their columns.
    const offset = hex(t.dataOffset, 8);
    const size = hex(t.size);
    const value = tagValueText(t);
    const out = [`${offset} ${size.padStart(Math.max(size.length, 20 - offset.length))} ${tagPath(g, t).padEnd(50)} ${value ?? ''}`];
    if (opts.verbose && value === null && !isMemoryTag(g, t) && t.size > 0) {
      // A block of a truncated copy is dumped as far as the file goes, never padded with zeros.
      const inline = t.inline;
      const present = inline ? t.size : Math.max(0, Math.min(t.size, s.metaFile.size - t.dataOffset));
      const data = Buffer.alloc(Math.min(present, HEXDUMP_LIMIT));
      if (inline) inline.copy(data);
      else s.metaFile.readAtSync(data, t.dataOffset);
      out.push(...hexdump(data, t.dataOffset));
      if (data.length < present) out.push(`[${present - data.length} more bytes not shown]`);
      if (present < t.size) out.push(`[${t.size - present} bytes missing: past the end of the file (truncated copy)]`);
    }
    return lines(out);
  };
  return groupedDoc({
    head: () => headText,
    counts: cp.groups.map((g) => g.tags.length),
    open: () => '',
    tag: (gi, ti) => {
      const g = cp.groups[gi] as (typeof cp.groups)[number];
      return row(g.name, g.tags[ti] as Tag);
    },
    close: () => '',
    tail: () => tailText,
  });
}

/** The text form as one string. */
export function infoText(s: Snapshot, opts: { verbose?: boolean } = {}): string {
  return docText(infoTextDoc(s, opts));
}
