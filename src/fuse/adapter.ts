import Fuse, { type Operations, type Stat } from 'fuse-native';
import * as fs from 'node:fs';
import { describeError } from '../errors';
import { SourceReadError } from '../cache/pagecache';
import type { FileNode, Node } from '../tree/nodes';
import type { Tree } from '../tree/build';

export interface AdapterOptions {
  uid: number;
  gid: number;
  /** Permission bits of files and of directories (never write bits: the mount is read-only). */
  fileMode: number;
  dirMode: number;
  /** One line per event worth a log entry (failed reads, unexpected errors). */
  log: (line: string) => void;
  /** Log every operation (--debug). */
  debug: boolean;
}

const O_ACCMODE = 3;
const ST_RDONLY = 1;

/**
 * FUSE operations over a Tree: the protocol side only. Nodes answer attributes and reads; this
 * maps paths and handles to nodes and results to errnos. The mount is read-only: anything that
 * would change it answers EROFS. An error thrown by a node becomes EIO for that operation and a
 * log line, never a crash that leaves a dead mount behind.
 */
export function fuseOperations(tree: Tree, opts: AdapterOptions): Operations {
  const { uid, gid, log } = opts;
  const time = tree.mtime;
  /** Open files by handle: reads skip the path walk. Handle 0 is never given out. */
  const handles = new Map<number, FileNode>();
  let nextHandle = 1;

  const stat = (node: Node): Stat => {
    const base = { uid, gid, ino: node.ino, atime: time, mtime: time, ctime: time, blksize: 4096 };
    if (node.kind === 'dir') {
      let subdirs = 0;
      for (const c of node.children.values()) if (c.kind === 'dir') subdirs++;
      return { ...base, mode: fs.constants.S_IFDIR | (opts.dirMode & 0o555), size: 0, nlink: 2 + subdirs };
    }
    return { ...base, mode: fs.constants.S_IFREG | (opts.fileMode & 0o444), size: node.size, nlink: 1, blocks: Math.ceil((node.storedBytes ?? node.size) / 512) };
  };

  const trace = (op: string, path: string, result: number | string): void => {
    if (opts.debug) log(`${op} ${path} -> ${result}`);
  };

  /** Run an operation body; anything it throws is logged and answered with EIO. */
  const guard = <A extends unknown[]>(op: string, body: (...args: A) => void, fail: (...args: A) => void) =>
    (...args: A): void => {
      try {
        body(...args);
      } catch (err) {
        log(`${op} ${String(args[0])}: unexpected error: ${describeError(err)}`);
        fail(...args);
      }
    };

  const readOnly = (op: string) => (path: string, ...rest: unknown[]): void => {
    trace(op, path, 'EROFS');
    const cb = rest[rest.length - 1] as (code: number) => void;
    cb(Fuse.EROFS);
  };

  return {
    getattr: guard('getattr', (path: string, cb: (code: number, st?: Stat) => void) => {
      const node = tree.lookup(path);
      trace('getattr', path, node ? 0 : 'ENOENT');
      if (!node) return cb(Fuse.ENOENT);
      cb(0, stat(node));
    }, (_p, cb) => cb(Fuse.EIO)),

    readdir: guard('readdir', (path: string, cb: (code: number, names?: string[]) => void) => {
      const node = tree.lookup(path);
      trace('readdir', path, node ? (node.kind === 'dir' ? 0 : 'ENOTDIR') : 'ENOENT');
      if (!node) return cb(Fuse.ENOENT);
      if (node.kind !== 'dir') return cb(Fuse.ENOTDIR);
      cb(0, ['.', '..', ...node.children.keys()]);
    }, (_p, cb) => cb(Fuse.EIO)),

    open: guard('open', (path: string, flags: number, cb: (code: number, fd?: number) => void) => {
      const node = tree.lookup(path);
      let code = 0;
      if (!node) code = Fuse.ENOENT;
      else if (node.kind === 'dir') code = Fuse.EISDIR;
      else if ((flags & O_ACCMODE) !== fs.constants.O_RDONLY) code = Fuse.EROFS;
      trace('open', path, code);
      if (code !== 0 || !node || node.kind !== 'file') return cb(code);
      const h = nextHandle++;
      handles.set(h, node);
      cb(0, h);
    }, (_p, _f, cb) => cb(Fuse.EIO)),

    release: guard('release', (path: string, fd: number, cb: (code: number) => void) => {
      handles.delete(fd);
      trace('release', path, 0);
      cb(0);
    }, (_p, _f, cb) => cb(0)),

    read: guard('read', (path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => {
      const node = handles.get(fd) ?? tree.lookup(path);
      if (!node || node.kind !== 'file') return cb(Fuse.EBADF);
      const done = (n: number): void => {
        // No string is built per read unless --debug asked for the trace.
        if (opts.debug) trace('read', `${path} @${pos}+${len}`, n);
        cb(n);
      };
      const n = node.read(buf, pos, len);
      if (typeof n === 'number') return done(n);
      n.then(
        done,
        (err: unknown) => {
          log(`read ${path} at ${pos} (+${len}): ${err instanceof SourceReadError ? err.message : `unexpected error: ${describeError(err)}`}: answered EIO`);
          cb(Fuse.EIO);
        },
      );
    }, (_p, _f, _b, _l, _o, cb) => cb(Fuse.EIO)),

    statfs: guard('statfs', (path: string, cb: (code: number, s?: import('fuse-native').Statfs) => void) => {
      trace('statfs', path, 0);
      cb(0, { bsize: 4096, frsize: 4096, blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, favail: 0, fsid: 0, flag: ST_RDONLY, namemax: 255 });
    }, (_p, cb) => cb(Fuse.EIO)),

    access: guard('access', (path: string, mode: number, cb: (code: number) => void) => {
      const node = tree.lookup(path);
      const code = !node ? Fuse.ENOENT : mode & fs.constants.W_OK ? Fuse.EROFS : 0;
      trace('access', path, code);
      cb(code);
    }, (_p, _m, cb) => cb(Fuse.EIO)),

    getxattr: guard('getxattr', (path: string, name: string, _position: number, cb: (code: number, v?: Buffer | null) => void) => {
      const node = tree.lookup(path);
      if (!node) return cb(Fuse.ENOENT);
      const value = node.kind === 'file' ? node.xattrs?.get(name) : undefined;
      trace('getxattr', `${path} ${name}`, value === undefined ? 'ENODATA' : 0);
      cb(0, value === undefined ? null : Buffer.from(value));
    }, (_p, _n, _o, cb) => cb(Fuse.EIO)),

    listxattr: guard('listxattr', (path: string, cb: (code: number, list?: string[]) => void) => {
      const node = tree.lookup(path);
      if (!node) return cb(Fuse.ENOENT);
      trace('listxattr', path, 0);
      cb(0, node.kind === 'file' && node.xattrs ? [...node.xattrs.keys()] : []);
    }, (_p, cb) => cb(Fuse.EIO)),

    write: (path, _fd, _buf, _len, _pos, cb) => {
      trace('write', path, 'EROFS');
      cb(Fuse.EROFS);
    },
    create: readOnly('create'),
    truncate: readOnly('truncate'),
    ftruncate: readOnly('ftruncate'),
    unlink: readOnly('unlink'),
    rename: readOnly('rename'),
    mkdir: readOnly('mkdir'),
    rmdir: readOnly('rmdir'),
    chmod: readOnly('chmod'),
    chown: readOnly('chown'),
    utimens: readOnly('utimens'),
    mknod: readOnly('mknod'),
    setxattr: readOnly('setxattr'),
    removexattr: readOnly('removexattr'),
    link: readOnly('link'),
    symlink: readOnly('symlink'),
  };
}
