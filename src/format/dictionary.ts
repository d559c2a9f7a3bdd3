/**
 * VMware's text files, the `.vmx` (configuration) and the `.vmsd` (snapshot database), and the
 * configuration an encrypted VM keeps in `encryption.data`: `key = "value"` lines. Values escape
 * a byte as `|XX` (two hex digits), e.g. `|22` for a double quote and `|7C` for `|`; keys are
 * read without regard to case, and the last of a repeated key wins, as in VMware.
 */

const LINE = /^\s*([A-Za-z0-9_.:\-[\]]+)\s*=\s*"(.*)"\s*$/;

function unescapeValue(v: string): string {
  return v.replace(/\|([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
}

/**
 * The `key = "value"` lines of a VMware text file, keys lower-cased (VMware reads them without
 * regard to case). `bad` counts the lines that are neither blank, a comment nor such a pair.
 */
export function parseDictionary(text: string): { values: Map<string, string>; bad: number; good: number } {
  const values = new Map<string, string>();
  let bad = 0;
  let good = 0;
  for (const line of text.split(/\r?\n/)) {
    if (/^\s*(#.*)?$/.test(line)) continue;
    const m = LINE.exec(line);
    if (!m) {
      bad++;
      continue;
    }
    good++;
    values.set((m[1] as string).toLowerCase(), unescapeValue(m[2] as string));
  }
  return { values, bad, good };
}

/**
 * Why `bytes` cannot be a VMware text file (binary data, or too few `key = "value"` lines), or
 * null when it reads as one. An empty file is one: VMware creates the `.vmsd` empty.
 */
export function notTextReason(bytes: Buffer): string | null {
  if (bytes.includes(0)) return 'it holds binary data (NUL bytes), not key = "value" lines';
  const { bad, good } = parseDictionary(bytes.toString('utf8'));
  if (bad > 0 && bad >= good) return `${bad} of its ${bad + good} lines are not key = "value" pairs`;
  return null;
}
