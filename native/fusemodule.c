/*
 * The libfuse module "vmssfs": serves the reads of plain evidence files on libfuse's own worker
 * threads.
 *
 * fuse-native runs libfuse 2's multithreaded loop and hands every request to JavaScript. libfuse 2
 * can stack "modules" on a filesystem (the modules= option): this file registers one, "vmssfs",
 * that answers read for the files of a readmap (readmap.c) with pread (or a splice, splice.c),
 * right on the worker thread, and hands every other operation, and reads of any other file, down
 * to fuse-native's handlers unchanged through the fuse_fs_* forwarders (the table of operations
 * below, as in libfuse's example/passthrough.c).
 *
 * The module's factory, called inside fuse_new for the option vmssfs_map=<id>, takes the map out
 * of the registry of pending maps (pending.c). It closes the map's descriptors in its destroy,
 * which libfuse calls once every request is answered, on the FUSE thread: JavaScript closing its
 * own descriptors never races a read.
 */
#define _GNU_SOURCE
#define FUSE_USE_VERSION 26
#include <fuse.h>
#include <node_api.h>

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusemodule.h"
#include "pending.h"
#include "readmap.h"
#include "splice.h"

/* The module's private data: the map, the filesystem below (fuse-native's handlers), and the
 * JavaScript function that logs failed reads. */
typedef struct {
  readmap *map;
  struct fuse_fs *next;
  napi_threadsafe_function on_error;
  int splice;            /* the kernel takes spliced replies (FUSE_CAP_SPLICE_WRITE, set in init) */
} native_fs;

/* Queue a failed read for the log; never blocks a worker. When the queue is full (a flood of
 * errors) the report is dropped: the read is still answered EIO and counted. */
static void report_error(native_fs *n, const char *path, int64_t offset, size_t size, const rm_error *why) {
  error_report *r = malloc(sizeof *r);
  if (r == NULL) return;
  snprintf(r->path, sizeof r->path, "%s", path);
  r->offset = offset;
  r->size = size;
  r->why = *why;
  if (napi_call_threadsafe_function(n->on_error, r, napi_tsfn_nonblocking) != napi_ok) free(r);
}

static native_fs *self(void) {
  return fuse_get_context()->private_data;
}

/* Copy a read of f into buf; failures are counted, reported to the log and answered -EIO. */
static int read_copy(native_fs *n, const rm_file *f, const char *path, char *buf, size_t size, off_t off) {
  rm_error why = { 0 };
  int rc = readmap_read(n->map, f, buf, size, (int64_t)off, &why);
  if (rc < 0 && why.length > 0) report_error(n, path, (int64_t)off, size, &why);
  return rc;
}

static int nat_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  native_fs *n = self();
  const rm_file *f = path != NULL ? readmap_find(n->map, path) : NULL;
  int rc = f != NULL ? read_copy(n, f, path, buf, size, off) : -EAGAIN;
  /* Not ours, or a source the map may not open now: JavaScript serves it. */
  return rc == -EAGAIN ? fuse_fs_read(n->next, path, buf, size, off, fi) : rc;
}

static int nat_read_buf(const char *path, struct fuse_bufvec **bufp, size_t size, off_t off, struct fuse_file_info *fi) {
  native_fs *n = self();
  const rm_file *f = path != NULL ? readmap_find(n->map, path) : NULL;
  if (f == NULL) return fuse_fs_read_buf(n->next, path, bufp, size, off, fi);
  struct fuse_bufvec *bv = malloc(sizeof *bv);
  if (bv == NULL) return -ENOMEM;
  uint32_t src;
  uint64_t pos;
  size_t len;
  if (n->splice && size >= SPLICE_MIN && readmap_span(n->map, f, size, (int64_t)off, &src, &pos, &len) && len >= SPLICE_MIN) {
    rm_error why = { 0 };
    int fd = readmap_source_fd(n->map, src, &why);
    if (fd < 0) {
      free(bv);
      if (fd == RM_NOT_NOW) return fuse_fs_read_buf(n->next, path, bufp, size, off, fi);
      report_error(n, path, (int64_t)off, size, &why);
      return -EIO;
    }
    thread_pipe *tp = pipe_for(len);
    if (tp != NULL && splice_whole(fd, pos, tp, len)) {
      *bv = FUSE_BUFVEC_INIT(len);
      bv->buf[0].flags = FUSE_BUF_IS_FD;
      bv->buf[0].fd = tp->fd[0];
      readmap_count_spliced(len);
      *bufp = bv;
      return 0;
    }
  }
  /* The copying path: libfuse frees bv and its memory after the reply. */
  char *mem = malloc(size ? size : 1);
  if (mem == NULL) {
    free(bv);
    return -ENOMEM;
  }
  int rc = read_copy(n, f, path, mem, size, off);
  if (rc < 0) {
    free(mem);
    free(bv);
    return rc == -EAGAIN ? fuse_fs_read_buf(n->next, path, bufp, size, off, fi) : rc;
  }
  *bv = FUSE_BUFVEC_INIT((size_t)rc);
  bv->buf[0].mem = mem;
  *bufp = bv;
  return 0;
}

static void *nat_init(struct fuse_conn_info *conn) {
  native_fs *n = self();
  fuse_fs_init(n->next, conn);
  /* Spliced replies, when this kernel and libfuse can (VMSSFS_SPLICE=0 turns them off, to
   * measure against the copying path). */
  const char *env = getenv("VMSSFS_SPLICE");
  if ((conn->capable & FUSE_CAP_SPLICE_WRITE) && !(env != NULL && strcmp(env, "0") == 0)) {
    conn->want |= FUSE_CAP_SPLICE_WRITE;
    n->splice = 1;
  }
  return n;
}

static void nat_destroy(void *data) {
  native_fs *n = data;
  fuse_fs_destroy(n->next);
  readmap_free(n->map);
  napi_release_threadsafe_function(n->on_error, napi_tsfn_release);
  free(n);
}

/* Everything else goes down unchanged. */
static int nat_getattr(const char *path, struct stat *st) {
  return fuse_fs_getattr(self()->next, path, st);
}
static int nat_fgetattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
  return fuse_fs_fgetattr(self()->next, path, st, fi);
}
static int nat_access(const char *path, int mask) {
  return fuse_fs_access(self()->next, path, mask);
}
static int nat_readlink(const char *path, char *buf, size_t size) {
  return fuse_fs_readlink(self()->next, path, buf, size);
}
static int nat_opendir(const char *path, struct fuse_file_info *fi) {
  return fuse_fs_opendir(self()->next, path, fi);
}
static int nat_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off, struct fuse_file_info *fi) {
  return fuse_fs_readdir(self()->next, path, buf, filler, off, fi);
}
static int nat_releasedir(const char *path, struct fuse_file_info *fi) {
  return fuse_fs_releasedir(self()->next, path, fi);
}
static int nat_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi) {
  return fuse_fs_fsyncdir(self()->next, path, datasync, fi);
}
static int nat_mknod(const char *path, mode_t mode, dev_t rdev) {
  return fuse_fs_mknod(self()->next, path, mode, rdev);
}
static int nat_mkdir(const char *path, mode_t mode) {
  return fuse_fs_mkdir(self()->next, path, mode);
}
static int nat_unlink(const char *path) {
  return fuse_fs_unlink(self()->next, path);
}
static int nat_rmdir(const char *path) {
  return fuse_fs_rmdir(self()->next, path);
}
static int nat_symlink(const char *from, const char *to) {
  return fuse_fs_symlink(self()->next, from, to);
}
static int nat_rename(const char *from, const char *to) {
  return fuse_fs_rename(self()->next, from, to);
}
static int nat_link(const char *from, const char *to) {
  return fuse_fs_link(self()->next, from, to);
}
static int nat_chmod(const char *path, mode_t mode) {
  return fuse_fs_chmod(self()->next, path, mode);
}
static int nat_chown(const char *path, uid_t uid, gid_t gid) {
  return fuse_fs_chown(self()->next, path, uid, gid);
}
static int nat_truncate(const char *path, off_t size) {
  return fuse_fs_truncate(self()->next, path, size);
}
static int nat_ftruncate(const char *path, off_t size, struct fuse_file_info *fi) {
  return fuse_fs_ftruncate(self()->next, path, size, fi);
}
static int nat_utimens(const char *path, const struct timespec ts[2]) {
  return fuse_fs_utimens(self()->next, path, ts);
}
static int nat_open(const char *path, struct fuse_file_info *fi) {
  return fuse_fs_open(self()->next, path, fi);
}
static int nat_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  return fuse_fs_write(self()->next, path, buf, size, off, fi);
}
static int nat_statfs(const char *path, struct statvfs *st) {
  return fuse_fs_statfs(self()->next, path, st);
}
static int nat_flush(const char *path, struct fuse_file_info *fi) {
  return fuse_fs_flush(self()->next, path, fi);
}
static int nat_release(const char *path, struct fuse_file_info *fi) {
  return fuse_fs_release(self()->next, path, fi);
}
static int nat_fsync(const char *path, int datasync, struct fuse_file_info *fi) {
  return fuse_fs_fsync(self()->next, path, datasync, fi);
}
static int nat_setxattr(const char *path, const char *name, const char *value, size_t size, int flags) {
  return fuse_fs_setxattr(self()->next, path, name, value, size, flags);
}
static int nat_getxattr(const char *path, const char *name, char *value, size_t size) {
  return fuse_fs_getxattr(self()->next, path, name, value, size);
}
static int nat_listxattr(const char *path, char *list, size_t size) {
  return fuse_fs_listxattr(self()->next, path, list, size);
}
static int nat_removexattr(const char *path, const char *name) {
  return fuse_fs_removexattr(self()->next, path, name);
}
static int nat_create(const char *path, mode_t mode, struct fuse_file_info *fi) {
  return fuse_fs_create(self()->next, path, mode, fi);
}

static const struct fuse_operations nat_ops = {
  .getattr = nat_getattr,
  .fgetattr = nat_fgetattr,
  .access = nat_access,
  .readlink = nat_readlink,
  .opendir = nat_opendir,
  .readdir = nat_readdir,
  .releasedir = nat_releasedir,
  .fsyncdir = nat_fsyncdir,
  .mknod = nat_mknod,
  .mkdir = nat_mkdir,
  .unlink = nat_unlink,
  .rmdir = nat_rmdir,
  .symlink = nat_symlink,
  .rename = nat_rename,
  .link = nat_link,
  .chmod = nat_chmod,
  .chown = nat_chown,
  .truncate = nat_truncate,
  .ftruncate = nat_ftruncate,
  .utimens = nat_utimens,
  .open = nat_open,
  .read = nat_read,
  .read_buf = nat_read_buf,
  .write = nat_write,
  .statfs = nat_statfs,
  .flush = nat_flush,
  .release = nat_release,
  .fsync = nat_fsync,
  .setxattr = nat_setxattr,
  .getxattr = nat_getxattr,
  .listxattr = nat_listxattr,
  .removexattr = nat_removexattr,
  .create = nat_create,
  .init = nat_init,
  .destroy = nat_destroy,
};

/* The module's own option, consumed here so libfuse does not reject it as unknown. */
typedef struct {
  unsigned map_id;
} nat_opts;

static const struct fuse_opt nat_opt_spec[] = {
  { "vmssfs_map=%u", offsetof(nat_opts, map_id), 0 },
  FUSE_OPT_END
};

/* Called by fuse_new for "modules=vmssfs": wrap the filesystem below with the map named by
 * vmssfs_map=. NULL (the mount fails) when the option or the map is missing. */
static struct fuse_fs *nat_factory(struct fuse_args *args, struct fuse_fs *below[]) {
  if (below[0] == NULL || below[1] != NULL) {
    fprintf(stderr, "vmssfs native: exactly one filesystem must lie below the module\n");
    return NULL;
  }
  nat_opts o = { 0 };
  if (fuse_opt_parse(args, &o, nat_opt_spec, NULL) == -1) return NULL;
  pending *p = pending_take(o.map_id);
  if (p == NULL) {
    fprintf(stderr, "vmssfs native: no read map %u\n", o.map_id);
    return NULL;
  }
  native_fs *n = malloc(sizeof *n);
  struct fuse_fs *fs = NULL;
  if (n != NULL) {
    n->map = p->map;
    n->next = below[0];
    n->on_error = p->on_error;
    n->splice = 0;
    fs = fuse_fs_new(&nat_ops, sizeof nat_ops, n);
  }
  if (fs == NULL) {
    readmap_free(p->map);
    napi_release_threadsafe_function(p->on_error, napi_tsfn_release);
    free(n);
  }
  free(p);
  return fs;
}

static struct fuse_module nat_module = { "vmssfs", nat_factory, NULL, NULL, 0 };

static void register_module(void) {
  fuse_register_module(&nat_module);
}

void fusemodule_register(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, register_module);
}
