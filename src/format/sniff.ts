/**
 * What a file that is not a checkpoint looks like, told cheaply from its first bytes, so the
 * analyst learns what they handed over rather than just "bad magic".
 */
export const SNIFF_BYTES = 64 * 1024;

const SIGNATURES: [Buffer, string][] = [
  [Buffer.from('\x7fELF', 'latin1'), 'an ELF file (a core dump, e.g. vmss2core output, or a program)'],
  [Buffer.from('EMiL', 'latin1'), 'a LiME memory image: give it to your memory tool directly'],
  [Buffer.from('PAGEDU64', 'latin1'), 'a Windows crash dump (64-bit)'],
  [Buffer.from('PAGEDUMP', 'latin1'), 'a Windows crash dump (32-bit)'],
  [Buffer.from('KDMP', 'latin1'), 'a Windows kernel dump'],
  [Buffer.from([0x1f, 0x8b]), 'gzip-compressed data: decompress it first'],
  [Buffer.from('PK\x03\x04', 'latin1'), 'a ZIP archive: extract it first'],
  [Buffer.from('7z\xbc\xaf\x27\x1c', 'latin1'), 'a 7-Zip archive: extract it first'],
  [Buffer.from('KDMV', 'latin1'), 'a VMware virtual disk (.vmdk), not a memory checkpoint'],
  [Buffer.from('# Disk DescriptorFile', 'latin1'), 'a VMware disk descriptor (.vmdk), not a memory checkpoint'],
];

/** Shannon entropy in bits per byte. */
export function entropy(buf: Buffer): number {
  if (buf.length === 0) return 0;
  const counts = new Array<number>(256).fill(0);
  for (const b of buf) counts[b] = (counts[b] as number) + 1;
  let h = 0;
  for (const c of counts) {
    if (c === 0) continue;
    const p = c / buf.length;
    h -= p * Math.log2(p);
  }
  return h;
}

function looksLikeText(buf: Buffer): boolean {
  let printable = 0;
  for (const b of buf) if (b === 9 || b === 10 || b === 13 || (b >= 0x20 && b < 0x7f) || b >= 0x80) printable++;
  return printable / buf.length > 0.97 && buf.includes(10);
}

/** A phrase describing `head` (the file's first bytes), or null when nothing useful can be said. */
export function describeContent(head: Buffer): string | null {
  if (head.length === 0) return 'it is empty';
  for (const [sig, what] of SIGNATURES) if (head.subarray(0, sig.length).equals(sig)) return `it looks like ${what}`;
  if (head.every((b) => b === 0)) return `its first ${head.length} bytes are all zeros (a sparse or wiped copy, or a raw memory file?)`;
  if (looksLikeText(head)) {
    const text = head.toString('utf8');
    if (/^\s*\.encoding\s*=|^\s*config\.version\s*=|^\s*displayName\s*=/m.test(text)) return 'it is text: a .vmx configuration, not a checkpoint';
    return 'it is text (a .vmx, log or notes file given by mistake?)';
  }
  if (head.length >= 4096 && entropy(head) > 7.9) {
    return 'its content looks random, like encrypted or compressed data (VMware\'s VM encryption leaves state files like this)';
  }
  return null;
}
