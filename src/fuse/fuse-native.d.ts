// The parts of fuse-native 2.2 this project uses (the package ships no types).
declare module 'fuse-native' {
  export interface Stat {
    mode: number;
    uid: number;
    gid: number;
    size: number;
    ino?: number;
    nlink?: number;
    blksize?: number;
    blocks?: number;
    atime: Date;
    mtime: Date;
    ctime: Date;
  }
  export interface Statfs {
    bsize: number; frsize: number; blocks: number; bfree: number; bavail: number;
    files: number; ffree: number; favail: number; fsid: number; flag: number; namemax: number;
  }
  type Done = (code: number) => void;
  export interface Operations {
    init?(cb: Done): void;
    getattr?(path: string, cb: (code: number, stat?: Stat) => void): void;
    fgetattr?(path: string, fd: number, cb: (code: number, stat?: Stat) => void): void;
    readdir?(path: string, cb: (code: number, names?: string[]) => void): void;
    open?(path: string, flags: number, cb: (code: number, fd?: number) => void): void;
    opendir?(path: string, flags: number, cb: (code: number, fd?: number) => void): void;
    release?(path: string, fd: number, cb: Done): void;
    releasedir?(path: string, fd: number, cb: Done): void;
    read?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (bytesOrError: number) => void): void;
    statfs?(path: string, cb: (code: number, statfs?: Statfs) => void): void;
    access?(path: string, mode: number, cb: Done): void;
    getxattr?(path: string, name: string, position: number, cb: (code: number, value?: Buffer | null) => void): void;
    listxattr?(path: string, cb: (code: number, list?: string[]) => void): void;
    write?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (bytesOrError: number) => void): void;
    create?(path: string, mode: number, cb: (code: number, fd?: number) => void): void;
    truncate?(path: string, size: number, cb: Done): void;
    ftruncate?(path: string, fd: number, size: number, cb: Done): void;
    unlink?(path: string, cb: Done): void;
    rename?(src: string, dest: string, cb: Done): void;
    mkdir?(path: string, mode: number, cb: Done): void;
    rmdir?(path: string, cb: Done): void;
    chmod?(path: string, mode: number, cb: Done): void;
    chown?(path: string, uid: number, gid: number, cb: Done): void;
    utimens?(path: string, atime: Date, mtime: Date, cb: Done): void;
    mknod?(path: string, mode: number, dev: number, cb: Done): void;
    setxattr?(path: string, name: string, value: Buffer, position: number, flags: number, cb: Done): void;
    removexattr?(path: string, name: string, cb: Done): void;
    link?(src: string, dest: string, cb: Done): void;
    symlink?(src: string, dest: string, cb: Done): void;
  }
  export interface Options {
    debug?: boolean;
    force?: boolean;
    mkdir?: boolean;
    /** Per-operation auto-reply in ms, or false for none. */
    timeout?: number | false;
    fsname?: string;
    subtype?: string;
    allowOther?: boolean;
    kernelCache?: boolean;
    autoCache?: boolean;
    attrTimeout?: number;
    entryTimeout?: number;
    maxRead?: number;
  }
  class Fuse {
    constructor(mnt: string, ops: Operations, opts?: Options);
    readonly mnt: string;
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err?: Error | null) => void): void;
    /** The `-o…` argument string handed to libfuse. */
    _fuseOptions(): string;
    static unmount(mnt: string, cb: (err: Error | null) => void): void;
    static readonly ENOENT: number;
    static readonly EIO: number;
    static readonly EROFS: number;
    static readonly ENOTDIR: number;
    static readonly EISDIR: number;
    static readonly ENODATA: number;
    static readonly ERANGE: number;
    static readonly EACCES: number;
    static readonly EBADF: number;
  }
  export default Fuse;
}
