import * as fs from 'node:fs';
import { isMounted } from './mount';
import { runCli, runCommand } from './run';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The pid of the detached daemon serving `mnt` (its command line names the mountpoint and --daemon-child). */
export function daemonPid(mnt: string): number | null {
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // gone meanwhile
    }
    if (argv.includes('--daemon-child') && argv.includes(mnt)) return Number(entry);
  }
  return null;
}

/**
 * A mount as a user makes it: `vmssfs SNAPSHOT MNT` returns once mounted, and a detached daemon
 * serves it. `unmount()` leaves neither the mount nor the daemon (call it in a finally or after hook).
 */
export async function mountDetached(snapshot: string, mnt: string, args: string[] = []): Promise<{ pid: number; unmount(): Promise<void> }> {
  const r = await runCli([...args, snapshot, mnt], { timeoutMs: 60_000 });
  const pid = daemonPid(mnt);
  const unmount = async (): Promise<void> => {
    if (await isMounted(mnt)) {
      if ((await runCommand('fusermount', ['-u', mnt])).code !== 0) await runCommand('fusermount', ['-uz', mnt]);
    }
    for (let i = 0; i < 250 && pid !== null && daemonPid(mnt) === pid; i++) await sleep(20);
    if (pid !== null && daemonPid(mnt) === pid) process.kill(pid, 'SIGKILL');
  };
  if (r.code !== 0 || pid === null) {
    await unmount();
    throw new Error(`vmssfs did not mount ${snapshot} (exit ${String(r.code)}): ${r.stderr.trim()}`);
  }
  return { pid, unmount };
}
