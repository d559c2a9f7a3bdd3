import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseMountinfo } from '../../src/mount/preflight';
import { BIN, tempDir } from './paths';
import { runCommand } from './run';

export async function isMounted(mnt: string): Promise<boolean> {
  const text = await fs.promises.readFile('/proc/self/mountinfo', 'utf8');
  return parseMountinfo(text).some((m) => m.mountPoint === mnt);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * A vmssfs daemon serving one mount, run in the foreground as its own process so the test
 * process only ever reads the mount asynchronously. `unmount()` is safe to call twice and always
 * leaves neither a mount nor a process: put it in an after hook.
 */
export class TestMount {
  stderr = '';
  private exited: Promise<number | null>;
  private done = false;

  private constructor(readonly mountpoint: string, readonly child: ChildProcess, private readonly cleanupDir: () => void) {
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
    child.stderr?.on('data', (b: Buffer) => (this.stderr += b.toString()));
  }

  /**
   * Mount `snapshot` with extra CLI args (and extra environment, e.g. VMSSFS_NATIVE=0); resolves
   * once the kernel shows the mount.
   */
  static async start(snapshot: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<TestMount> {
    const { dir, cleanup } = tempDir('vmssfs-mnt-');
    const child = spawn(process.execPath, [BIN, snapshot, dir, '-f', ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
    const m = new TestMount(dir, child, cleanup);
    const deadline = Date.now() + 15_000;
    let exitCode: number | null | undefined;
    void m.exited.then((c) => (exitCode = c));
    while (!(await isMounted(dir))) {
      if (exitCode !== undefined || Date.now() > deadline) {
        await m.unmount();
        throw new Error(`vmssfs did not mount ${snapshot} (exit ${String(exitCode)}): ${m.stderr.trim()}`);
      }
      await sleep(20);
    }
    return m;
  }

  path(...parts: string[]): string {
    return path.join(this.mountpoint, ...parts);
  }

  get pid(): number {
    return this.child.pid as number;
  }

  /**
   * Whether the daemon's stderr shows `re`, waiting a while for it: lines about failed native
   * reads reach the log from libfuse's threads through the event loop, just after the reply.
   */
  async stderrShows(re: RegExp, timeoutMs = 10_000): Promise<boolean> {
    const end = Date.now() + timeoutMs;
    while (!re.test(this.stderr)) {
      if (Date.now() > end) return false;
      await sleep(20);
    }
    return true;
  }

  /** Wait for the daemon to exit by itself; returns its exit code (null = killed by a signal). */
  waitExit(timeoutMs = 10_000): Promise<number | null | 'timeout'> {
    return Promise.race([this.exited, sleep(timeoutMs).then(() => 'timeout' as const)]);
  }

  /** fusermount -u (lazily if busy), then make sure the daemon is gone and the directory removed. */
  async unmount(): Promise<void> {
    if (this.done) return;
    this.done = true;
    if (await isMounted(this.mountpoint)) {
      const r = await runCommand('fusermount', ['-u', this.mountpoint]);
      if (r.code !== 0) await runCommand('fusermount', ['-uz', this.mountpoint]);
    }
    if ((await this.waitExit(5000)) === 'timeout') {
      this.child.kill('SIGKILL');
      await this.exited;
    }
    if (await isMounted(this.mountpoint)) await runCommand('fusermount', ['-uz', this.mountpoint]);
    this.cleanupDir();
  }
}
