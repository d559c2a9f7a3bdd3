import type { Operations } from 'fuse-native';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { VmssError, describeError } from '../errors';
import { fuseOperations } from '../fuse/adapter';
import { loadFuse } from '../fuse/load';
import { errnoName, inheritStderr, prepareNative, type NativeReads } from '../fuse/native';
import { PageCache } from '../cache/pagecache';
import type { Source } from '../io/source';
import { openTarget } from '../target/target';
import { BlockStreamSource } from '../io/blockstream';
import { treeModes } from '../tree/modes';
import { fittedMountOptions, optionString, parseUserOptions } from './options';
import type { Keyring } from '../crypto/keyring';
import { isUrl } from '../io/http-access';
import type { HttpClient } from '../io/http';
import { fusermount, mountAt, refusalReason } from './preflight';

export interface ServeOptions {
  snapshot: string;
  vmem?: string;
  /** Serve the memory file flat from 0 when the memory layout is unknown. */
  assumeFlat?: boolean;
  /** Absolute mountpoint. */
  mountpoint: string;
  cacheMiB: number;
  /** Extra FUSE options from -o. */
  fuseOptions: string[];
  debug: boolean;
  /** Called with the opened evidence files before anything is mounted or logged (the log is checked against them). */
  onSources?(sources: readonly Source[]): void;
  /** Key material for an encrypted VM (resolved lazily, or handed over by the parent). */
  keys?: Keyring;
  /** How a snapshot named by URL is reached (full URLs, credentials, trust). */
  http?: HttpClient;
}

/** How the daemon tells whoever started it what happened: stderr in the foreground, a pipe when detached. */
export interface Reporter {
  warning(text: string): void;
  ready(): void;
  /** Lines for the log (failed reads, unexpected errors, --debug traces). */
  log(text: string): void;
}

/**
 * fuse-native only knows a fixed set of options; this passes ours (and the user's -o) through.
 * The class is made when mounting: fuse-native (and libfuse with it) is loaded only then.
 */
function createFuse(mnt: string, ops: Operations, options: string[]) {
  const Fuse = loadFuse();
  class VmssFuse extends Fuse {
    override _fuseOptions(): string {
      return optionString(options);
    }
  }
  // timeout: false — fuse-native's auto-reply would hand the kernel's read buffer back while our
  // read may still be filling it.
  return new VmssFuse(mnt, ops, { timeout: false });
}

/** Kernel read-ahead for the mount, KiB: the kernel's default for FUSE is 128. */
const READ_AHEAD_KIB = 1024;

/**
 * Widen the kernel's read-ahead for our mount: sequential readers (scans, carvers, yara's mmap)
 * then keep several 128 KiB requests in flight, which libfuse's threads serve in parallel. 512 KiB
 * read 1.4x faster than 128 here; with spliced replies 1 MiB reads as fast again and keeps yara's
 * mmap from waiting on the mount (1.10x the source's time against 1.2-1.6x at 512 KiB); 2 MiB and
 * more are slower (docs/performance.md). Only root may write /sys/class/bdi, so this is best
 * effort; procfs and sysfs are read, never our own mount.
 */
async function widenReadAhead(mountpoint: string): Promise<string> {
  try {
    const m = await mountAt(mountpoint);
    if (!m || !/^\d+:\d+$/.test(m.device)) return 'read-ahead: mount not found in mountinfo, left as it is';
    await fs.promises.writeFile(`/sys/class/bdi/${m.device}/read_ahead_kb`, String(READ_AHEAD_KIB));
    return `read-ahead: ${READ_AHEAD_KIB} KiB`;
  } catch (err) {
    return `read-ahead left at the kernel's default: ${describeError(err)}`;
  }
}

function runFusermount(args: string[]): Promise<boolean> {
  return new Promise((resolve) => {
    execFile(fusermount(), args, { timeout: 10_000 }, (err) => resolve(!err));
  });
}

/**
 * Parse, mount and serve until unmounted (fusermount -u, or a signal). Resolves with the exit
 * status once the mount is gone; rejects with VmssError when it could not mount.
 */
export async function serve(opts: ServeOptions, report: Reporter): Promise<number> {
  // Signals are caught from the start: the kernel lists the mount before libfuse's INIT reaches
  // us, and a signal in that window must unmount, not kill the process and leave a dead mount.
  let stop: ((sig: string) => void) | null = null;
  let earlySignal: string | null = null;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => (stop ? stop(sig) : (earlySignal ??= sig)));
  }
  // Before the evidence is opened: without fuse-native or libfuse there is nothing to serve with.
  loadFuse();
  const user = parseUserOptions(opts.fuseOptions);
  const cache = new PageCache({
    maxBytes: opts.cacheMiB * 1024 * 1024,
    onSlow: (source, ms, forMs) => report.log(`${source}: a read took ${ms} ms (the disk, not memory): its reads go to the thread pool for ${forMs / 1000} s, so that it stalls no other read`),
  });
  const served = openTarget(opts.snapshot, { vmem: opts.vmem, assumeFlat: opts.assumeFlat, keys: opts.keys, http: opts.http }, cache);
  try {
    opts.onSources?.(served.files);
  } catch (err) {
    served.close();
    throw err;
  }
  for (const w of served.warnings) report.warning(w);
  const tree = served.tree;
  const modes = treeModes(served.files, user);
  const ops = fuseOperations(tree, {
    uid: modes.uid,
    gid: modes.gid,
    fileMode: modes.file,
    dirMode: modes.dir,
    log: report.log,
    debug: opts.debug,
  });
  // Plain local evidence is read by our libfuse module on libfuse's threads; when the addon
  // cannot load, everything is read here, and the user is told once.
  const prepared = prepareNative(tree, report.log);
  const native: NativeReads | null = 'reason' in prepared ? null : prepared;
  if ('reason' in prepared) {
    if (process.env.VMSSFS_NATIVE !== '0') report.warning(`native reads unavailable (${prepared.reason}): every read goes through JavaScript`);
    if (opts.debug) report.log(`native reads off: ${prepared.reason}`);
  } else if (opts.debug) {
    report.log(`native reads on (${prepared.file}) for ${prepared.paths.length} files (${prepared.paths.slice(0, 3).join(', ')}${prepared.paths.length > 3 ? ', ...' : ''})`);
  }
  let options: string[];
  try {
    // The fsname gives way before the native module's options (fuse-native keeps 1023 bytes).
    options = fittedMountOptions(isUrl(served.source) ? served.source : fs.realpathSync(served.source), [...user.fuse, ...(native?.fuseOptions ?? [])]);
  } catch (err) {
    native?.discard();
    served.close();
    throw err;
  }
  const fuse = createFuse(opts.mountpoint, ops, options);

  try {
    await new Promise<void>((resolve, reject) => {
      // fusermount (a user who is not root mounts through it) says on stderr why it refused.
      const told = inheritStderr(true);
      fuse.mount((err) => {
        if (told) inheritStderr(false);
        if (!err) return resolve();
        native?.discard();
        let why = err.message === 'fuse failed' ? 'libfuse or the kernel refused the mount' : err.message;
        // Where fusermount could not say it, the usual reasons are looked for here.
        const guess = told ? null : refusalReason(opts.mountpoint, user.fuse);
        if (guess) why += ` (${guess})`;
        reject(new VmssError(`${opts.mountpoint}: cannot mount: ${why}`));
      });
    });
  } catch (err) {
    // libfuse can refuse an option after the kernel has mounted (fuse_mount succeeds, fuse_new
    // fails): that mount has no server and would stay dead. The mountpoint was free before, so a
    // vmssfs mount there now is this one.
    const left = await mountAt(opts.mountpoint).catch(() => undefined);
    if (left?.fsType === 'fuse.vmssfs') await runFusermount(['-uz', opts.mountpoint]);
    served.close();
    throw err;
  }

  // Compressed memory: the seek index is built in the background, so that reads anywhere decode
  // a few tens of KiB instead of whole blocks. A single checkpoint's from now on; a VM folder's
  // each when its memory is first read: a folder may hold many snapshots of which an analyst
  // reads one or two, and each pass decodes all of its memory and keeps up to 3% of it.
  const folder = served.evidence === null;
  for (const f of served.files) {
    if (!(f instanceof BlockStreamSource)) continue;
    const started = (pass: Promise<void>): void => {
      if (opts.debug && folder) report.log(`${f.name}: seek index started (first read)`);
      void pass.then(() => {
        const st = f.indexStats;
        if (opts.debug && st) report.log(`${f.name}: seek index ${st.done ? 'built' : 'stopped'}: ${st.points} points, ${st.bytes} bytes, in ${st.seconds.toFixed(2)} s (${st.native ? 'C' : 'JavaScript'})`);
        for (const n of f.notes.filter((x) => x.startsWith('seek index'))) report.log(`${f.name}: ${n}`);
      });
    };
    if (folder) f.indexOnFirstRead(started);
    else started(f.startIndex());
  }
  void widenReadAhead(opts.mountpoint).then((note) => {
    if (opts.debug) report.log(note);
  });

  // Under --debug, the process's memory by kind, sampled: what the peak RSS is made of (the
  // JavaScript heap, buffers outside it, and the rest: code, stacks, the allocator's free lists).
  const mem = { rss: 0, heapUsed: 0, heapTotal: 0, external: 0, arrayBuffers: 0 };
  const sampleMemory = (): void => {
    const u = process.memoryUsage();
    for (const k of Object.keys(mem) as Array<keyof typeof mem>) mem[k] = Math.max(mem[k], u[k]);
  };
  const memWatch = opts.debug ? setInterval(sampleMemory, 250) : null;
  memWatch?.unref();

  return new Promise<number>((resolve) => {
    let finishing = false;
    const finish = (code: number): void => {
      if (finishing) return;
      finishing = true;
      clearInterval(watch);
      if (memWatch) clearInterval(memWatch);
      if (opts.debug) {
        sampleMemory();
        const mib = (n: number): string => (n / 1048576).toFixed(1);
        report.log(`memory (sampled peaks, MiB): rss ${mib(mem.rss)}, heap used ${mib(mem.heapUsed)} of ${mib(mem.heapTotal)}, external ${mib(mem.external)}, array buffers ${mib(mem.arrayBuffers)}`);
        const st = cache.stats;
        report.log(`page cache: ${st.hits} hits, ${st.misses} chunk misses (${st.shared} shared, ${st.prefetched} read ahead), ${st.direct} reads straight from the source`);
        // Every cache of the mount (chunks, decoded blocks, decrypted pages) draws from one budget.
        report.log(`cache budget: peak ${cache.budget.peak} bytes held of ${cache.budget.maxBytes} (--cache-size), ${cache.budget.held} at unmount; ${cache.budget.stats.reused} buffers reused, ${cache.budget.stats.fresh} allocated (${cache.budget.stats.freshBytes} bytes)`);
      }
      if (native) {
        // Failed native reads are answered EIO in C, which cannot write our log: they are told here.
        const c = native.counts();
        if (opts.debug) report.log(`native reads: ${c.reads} served (${c.bytes} bytes, ${c.spliced} spliced), ${c.errors} failed`);
        if (c.errors > 0) report.log(`${c.errors} native reads answered EIO (last: ${errnoName(c.lastErrno)})`);
      }
      served.close();
      resolve(code);
    };
    // fuse-native does not tell JS when the kernel drops the mount (fusermount -u from outside):
    // watch the mount table instead. Reading procfs never touches our own mount.
    const watch = setInterval(() => {
      mountAt(opts.mountpoint).then((m) => {
        if (!m) finish(0);
      }, () => undefined);
    }, 500);
    const onSignal = (sig: string): void => {
      report.log(`${sig}: unmounting ${opts.mountpoint}`);
      void (async () => {
        // A plain unmount first; when readers keep it busy, a lazy one (gone for new lookups now,
        // released when the last reader closes).
        if (!(await runFusermount(['-u', opts.mountpoint]))) {
          report.log(`${opts.mountpoint} is busy: unmounting lazily`);
          await runFusermount(['-uz', opts.mountpoint]);
        }
        finish(0);
      })().catch((err: unknown) => {
        report.log(`unmount failed: ${describeError(err)}`);
        finish(1);
      });
    };
    stop = onSignal;
    report.ready();
    if (earlySignal) onSignal(earlySignal);
  });
}
