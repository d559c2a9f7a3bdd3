/**
 * Runs the CLI in this process and reports its peak RSS on stderr's last line: `maxrss=KiB`.
 *
 * The peak is the kernel's VmHWM of this process's own memory, not getrusage's maxRSS: Linux
 * carries ru_maxrss across fork and exec, so a child of a large parent (the test runner, at
 * 300 MiB) reports at least the parent's size, whatever the child itself held.
 */
import * as fs from 'node:fs';
import { main } from '../../src/cli/main';

function peakKiB(): number {
  return Number(/^VmHWM:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1]);
}

main(process.argv.slice(2)).then((code) => {
  process.stderr.write(`maxrss=${peakKiB()}\n`);
  process.exit(code);
});
