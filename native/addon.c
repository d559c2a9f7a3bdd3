/*
 * vmssfs_native: serves the reads of plain evidence files on libfuse's own worker threads.
 *
 * fuse-native runs libfuse 2's multithreaded loop and hands every request to JavaScript. libfuse 2
 * can stack "modules" on a filesystem (the modules= option): this file registers one, "vmssfs",
 * that answers read for the files of a readmap (readmap.c) with pread, right on the worker thread,
 * and hands every other operation, and reads of any other file, down to fuse-native's handlers
 * unchanged through the fuse_fs_* forwarders.
 *
 * JavaScript side (src/fuse/native.ts):
 *   prepare(spec, onError) -> id   spec: {sources, files, maxOpened}
 *                         builds a readmap from the tree's extents; the mount then names it with
 *                         the options "modules=vmssfs,vmssfs_map=<id>"; the module's factory,
 *                         called inside fuse_new, takes it over. onError(report) is called on the
 *                         JavaScript thread for each failed read, for the log.
 *   discard(id)           frees a map no mount took (the mount failed).
 *   counts()              {reads, bytes, errors, spliced, lastErrno} for --debug.
 * The module closes the map's descriptors in its destroy, which libfuse calls once every request
 * is answered, on the FUSE thread: JavaScript closing its own descriptors never races a read.
 */
#define _GNU_SOURCE
#define FUSE_USE_VERSION 26
#include <fuse.h>
#include <node_api.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "readmap.h"

/* ---- maps waiting for their mount ---------------------------------------------------------- */

typedef struct pending {
  unsigned id;
  readmap *map;
  napi_threadsafe_function on_error;
  struct pending *next;
} pending;

static pthread_mutex_t pending_lock = PTHREAD_MUTEX_INITIALIZER;
static pending *pending_list;
static unsigned next_id = 1;

static unsigned pending_add(readmap *m, napi_threadsafe_function on_error) {
  pending *p = malloc(sizeof *p);
  if (p == NULL) return 0;
  pthread_mutex_lock(&pending_lock);
  p->id = next_id++;
  p->map = m;
  p->on_error = on_error;
  p->next = pending_list;
  pending_list = p;
  unsigned id = p->id;
  pthread_mutex_unlock(&pending_lock);
  return id;
}

/* Remove and return the entry with this id (NULL when there is none); the caller frees it. */
static pending *pending_take(unsigned id) {
  pending *found = NULL;
  pthread_mutex_lock(&pending_lock);
  for (pending **pp = &pending_list; *pp != NULL; pp = &(*pp)->next) {
    if ((*pp)->id == id) {
      found = *pp;
      *pp = found->next;
      break;
    }
  }
  pthread_mutex_unlock(&pending_lock);
  return found;
}

/* ---- the libfuse module -------------------------------------------------------------------- */

/* The module's private data: the map, the filesystem below (fuse-native's handlers), and the
 * JavaScript function that logs failed reads. */
typedef struct {
  readmap *map;
  struct fuse_fs *next;
  napi_threadsafe_function on_error;
  int splice;            /* the kernel takes spliced replies (FUSE_CAP_SPLICE_WRITE, set in init) */
} native_fs;

/* A failed read on its way to the JavaScript log. */
typedef struct {
  char path[4096];
  int64_t offset;
  uint64_t size;
  rm_error why;
} error_report;

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

/* ---- spliced replies ----
 * A read that lies within one extent of one source is answered with the source's pages
 * themselves: spliced from the file into a pipe of this worker thread, which libfuse then
 * splices into /dev/fuse. The bytes are copied once, by the kernel, instead of twice (pread into
 * a buffer, then write to the device): it halves the daemon's work on long reads (yara, dd).
 *
 * The guarantee of the copying path holds: the splice must bring every byte asked for, or the
 * read falls back to pread, which answers EIO for a source that shrank. The pipe holds
 * references to the source's pages, not a range to read later, so libfuse cannot come back
 * short. Small reads keep the copying path: a splice costs more syscalls than it saves there. */

#define SPLICE_MIN (64 * 1024)

typedef struct {
  int fd[2];   /* [0] handed to libfuse, [1] spliced into */
  size_t size; /* the pipe's capacity */
} thread_pipe;

static pthread_key_t pipe_key;
static int pipe_key_ok;

static void pipe_free(void *p) {
  thread_pipe *tp = p;
  close(tp->fd[0]);
  close(tp->fd[1]);
  free(tp);
}

static void make_pipe_key(void) {
  pipe_key_ok = pthread_key_create(&pipe_key, pipe_free) == 0;
}

static void pipe_drop(thread_pipe *tp) {
  pthread_setspecific(pipe_key, NULL);
  pipe_free(tp);
}

/* This thread's pipe, empty and able to hold len bytes; NULL when none can be had. A pipe left
 * with bytes in it (libfuse failed before taking them) is never reused: its bytes are stale. */
static thread_pipe *pipe_for(size_t len) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, make_pipe_key);
  if (!pipe_key_ok) return NULL;
  thread_pipe *tp = pthread_getspecific(pipe_key);
  int queued = 0;
  if (tp != NULL && (ioctl(tp->fd[0], FIONREAD, &queued) != 0 || queued != 0)) {
    pipe_drop(tp);
    tp = NULL;
  }
  if (tp == NULL) {
    tp = malloc(sizeof *tp);
    /* Non-blocking: a full pipe fails the splice (and the read falls back) instead of hanging. */
    if (tp == NULL || pipe2(tp->fd, O_CLOEXEC | O_NONBLOCK) != 0) {
      free(tp);
      return NULL;
    }
    int cap = fcntl(tp->fd[0], F_GETPIPE_SZ);
    tp->size = cap > 0 ? (size_t)cap : 0;
    if (pthread_setspecific(pipe_key, tp) != 0) {
      pipe_free(tp);
      return NULL;
    }
  }
  if (tp->size < len) {
    int cap = len <= INT_MAX ? fcntl(tp->fd[0], F_SETPIPE_SZ, (int)len) : -1;
    if (cap < 0) return NULL; /* past /proc/sys/fs/pipe-max-size: copy instead */
    tp->size = (size_t)cap;
  }
  return tp;
}

/* Splice exactly len bytes of fd at pos into the pipe: 1, or 0 when they did not all come (the
 * pipe is then dropped, and the caller copies instead). */
static int splice_whole(int fd, uint64_t pos, thread_pipe *tp, size_t len) {
  loff_t at = (loff_t)pos; /* pos + len <= the source's size <= INT64_MAX: checked when built */
  size_t done = 0;
  while (done < len) {
    ssize_t n = splice(fd, &at, tp->fd[1], NULL, len - done, SPLICE_F_MOVE);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      pipe_drop(tp);
      return 0;
    }
    done += (size_t)n;
  }
  return 1;
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

/* ---- N-API: building a map from JavaScript ------------------------------------------------- */

#define MAX_SAFE 9007199254740991.0 /* 2^53 - 1: every integer up to it is exact in a double */

/* Throws and returns 0 unless obj[key] is an integer in [0, limit]. */
static int get_uint(napi_env env, napi_value obj, const char *key, uint64_t limit, uint64_t *out) {
  napi_value v;
  double d;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok || napi_get_value_double(env, v, &d) != napi_ok) {
    char msg[96];
    snprintf(msg, sizeof msg, "vmssfs native: %s is not a number", key);
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  if (!isfinite(d) || d < 0 || d != floor(d) || d > MAX_SAFE || (uint64_t)d > limit) {
    char msg[128];
    snprintf(msg, sizeof msg, "vmssfs native: %s = %g is not an integer in [0, %llu]", key, d, (unsigned long long)limit);
    napi_throw_range_error(env, NULL, msg);
    return 0;
  }
  *out = (uint64_t)d;
  return 1;
}

/* obj[key] as an array and its length; throws and returns 0 otherwise. */
static int get_array(napi_env env, napi_value obj, const char *key, napi_value *arr, uint32_t *len) {
  bool is_array = false;
  if (napi_get_named_property(env, obj, key, arr) != napi_ok || napi_is_array(env, *arr, &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, *arr, len) != napi_ok) {
    char msg[96];
    snprintf(msg, sizeof msg, "vmssfs native: %s is not an array", key);
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  return 1;
}

static int fail(napi_env env, const char *msg) {
  napi_throw_error(env, NULL, msg);
  return 0;
}

static int has(napi_env env, napi_value obj, const char *key) {
  bool yes = false;
  return napi_has_named_property(env, obj, key, &yes) == napi_ok && yes;
}

/* Sources: [{fd, size}] (the descriptor is duplicated: the map owns its own copy) or
 * [{path, dev, ino, size}] (opened by the map on its first read; see readmap.h). */
static int build_sources(napi_env env, napi_value spec, readmap *m) {
  napi_value arr;
  uint32_t len;
  if (!get_array(env, spec, "sources", &arr, &len)) return 0;
  m->sources = calloc(len ? len : 1, sizeof *m->sources);
  if (m->sources == NULL) return fail(env, "vmssfs native: out of memory");
  for (uint32_t i = 0; i < len; i++) {
    rm_source *src = &m->sources[i];
    napi_value s;
    uint64_t size;
    if (napi_get_element(env, arr, i, &s) != napi_ok) return fail(env, "vmssfs native: bad source");
    if (!get_uint(env, s, "size", INT64_MAX, &size)) return 0;
    int fd = -1;
    char *file = NULL;
    uint64_t dev = 0, ino = 0;
    if (has(env, s, "path")) {
      napi_value pv;
      size_t plen;
      if (!get_uint(env, s, "dev", UINT64_MAX, &dev) || !get_uint(env, s, "ino", UINT64_MAX, &ino)) return 0;
      if (napi_get_named_property(env, s, "path", &pv) != napi_ok || napi_get_value_string_utf8(env, pv, NULL, 0, &plen) != napi_ok ||
          plen == 0 || plen > 4095)
        return fail(env, "vmssfs native: a source's path is not a string of 1 to 4095 bytes");
      file = malloc(plen + 1);
      if (file == NULL) return fail(env, "vmssfs native: out of memory");
      if (napi_get_value_string_utf8(env, pv, file, plen + 1, &plen) != napi_ok || file[0] != '/' || strlen(file) != plen) {
        free(file);
        return fail(env, "vmssfs native: a source's path must be absolute and hold no NUL");
      }
    } else {
      uint64_t given;
      if (!get_uint(env, s, "fd", INT32_MAX, &given)) return 0;
      fd = fcntl((int)given, F_DUPFD_CLOEXEC, 3);
      if (fd < 0) return fail(env, "vmssfs native: a source's descriptor is not open");
    }
    src->fd = fd;
    src->size = size;
    src->path = file;
    src->dev = dev;
    src->ino = ino;
    pthread_mutex_init(&src->open_lock, NULL);
    m->n_sources = i + 1; /* counted once filled: readmap_free frees what is there */
  }
  return 1;
}

/* One extent of file f: {start, length} and either {source, sourceOffset} or {bytes}. */
static int build_extent(napi_env env, napi_value e, const readmap *m, const rm_file *f, uint64_t prev_end, rm_extent *out) {
  uint64_t start, length;
  if (!get_uint(env, e, "start", f->size, &start) || !get_uint(env, e, "length", f->size - start, &length)) return 0;
  if (length == 0 || start < prev_end) return fail(env, "vmssfs native: extents must be non-empty, sorted and apart");
  out->start = start;
  out->length = length;
  out->bytes = NULL;
  out->source = 0;
  out->src_offset = 0;
  if (has(env, e, "bytes")) {
    napi_value b;
    bool is_buffer = false;
    void *data;
    size_t blen;
    if (napi_get_named_property(env, e, "bytes", &b) != napi_ok || napi_is_buffer(env, b, &is_buffer) != napi_ok || !is_buffer ||
        napi_get_buffer_info(env, b, &data, &blen) != napi_ok || blen != length)
      return fail(env, "vmssfs native: an extent's bytes must be a Buffer of its length");
    uint8_t *copy = malloc(blen);
    if (copy == NULL) return fail(env, "vmssfs native: out of memory");
    memcpy(copy, data, blen);
    out->bytes = copy;
    return 1;
  }
  uint64_t source, src_offset;
  if (m->n_sources == 0 || !get_uint(env, e, "source", m->n_sources - 1, &source)) {
    if (m->n_sources == 0) fail(env, "vmssfs native: an extent names a source but there are none");
    return 0;
  }
  /* The source range must fit off_t for pread. */
  if (!get_uint(env, e, "sourceOffset", (uint64_t)INT64_MAX - length, &src_offset)) return 0;
  out->source = (uint32_t)source;
  out->src_offset = src_offset;
  return 1;
}

/* Files: [{path, size, extents}]. */
static int build_files(napi_env env, napi_value spec, readmap *m) {
  napi_value arr;
  uint32_t len;
  if (!get_array(env, spec, "files", &arr, &len)) return 0;
  m->files = calloc(len ? len : 1, sizeof *m->files);
  if (m->files == NULL) return fail(env, "vmssfs native: out of memory");
  for (uint32_t i = 0; i < len; i++) {
    rm_file *f = &m->files[i];
    m->n_files = i + 1; /* counted before filling: readmap_free frees what is there */
    napi_value fo, pv, exts;
    uint32_t n_ext;
    size_t plen;
    if (napi_get_element(env, arr, i, &fo) != napi_ok || napi_get_named_property(env, fo, "path", &pv) != napi_ok ||
        napi_get_value_string_utf8(env, pv, NULL, 0, &plen) != napi_ok)
      return fail(env, "vmssfs native: a file's path is not a string");
    if (plen == 0 || plen > 4095) return fail(env, "vmssfs native: a file's path is empty or too long");
    f->path = malloc(plen + 1);
    if (f->path == NULL) return fail(env, "vmssfs native: out of memory");
    if (napi_get_value_string_utf8(env, pv, f->path, plen + 1, &plen) != napi_ok || f->path[0] != '/' || strlen(f->path) != plen)
      return fail(env, "vmssfs native: a file's path must start with / and hold no NUL");
    if (!get_uint(env, fo, "size", INT64_MAX, &f->size) || !get_array(env, fo, "extents", &exts, &n_ext)) return 0;
    f->extents = calloc(n_ext ? n_ext : 1, sizeof *f->extents);
    if (f->extents == NULL) return fail(env, "vmssfs native: out of memory");
    uint64_t prev_end = 0;
    for (uint32_t j = 0; j < n_ext; j++) {
      napi_value e;
      if (napi_get_element(env, exts, j, &e) != napi_ok) return fail(env, "vmssfs native: bad extent");
      if (!build_extent(env, e, m, f, prev_end, &f->extents[j])) return 0;
      f->n_extents = j + 1;
      prev_end = f->extents[j].start + f->extents[j].length;
    }
  }
  if (readmap_index(m) != 0) return fail(env, "vmssfs native: two files share a path");
  return 1;
}

static void set_number(napi_env env, napi_value obj, const char *key, double value) {
  napi_value v;
  if (napi_create_double(env, value, &v) == napi_ok) napi_set_named_property(env, obj, key, v);
}

/* On the JavaScript thread: hand a failed read to the log function as
 * {path, offset, size, source, errno, opening, position, length}. */
static void call_on_error(napi_env env, napi_value fn, void *context, void *data) {
  (void)context;
  error_report *r = data;
  napi_value obj, path, undefined;
  if (env != NULL && napi_create_object(env, &obj) == napi_ok && napi_create_string_utf8(env, r->path, NAPI_AUTO_LENGTH, &path) == napi_ok &&
      napi_get_undefined(env, &undefined) == napi_ok) {
    napi_set_named_property(env, obj, "path", path);
    set_number(env, obj, "offset", (double)r->offset);
    set_number(env, obj, "size", (double)r->size);
    set_number(env, obj, "source", (double)r->why.source);
    set_number(env, obj, "errno", (double)r->why.errnum);
    set_number(env, obj, "opening", (double)r->why.opening);
    set_number(env, obj, "position", (double)r->why.position);
    set_number(env, obj, "length", (double)r->why.length);
    napi_call_function(env, undefined, fn, 1, &obj, NULL);
  }
  free(r);
}

/* prepare({sources, files}, onError) -> id for the vmssfs_map= option. */
static napi_value js_prepare(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_valuetype t, tf;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || napi_typeof(env, argv[0], &t) != napi_ok ||
      t != napi_object || napi_typeof(env, argv[1], &tf) != napi_ok || tf != napi_function) {
    napi_throw_type_error(env, NULL, "vmssfs native: prepare needs a map description and an error callback");
    return NULL;
  }
  readmap *m = calloc(1, sizeof *m);
  if (m == NULL) {
    fail(env, "vmssfs native: out of memory");
    return NULL;
  }
  uint64_t max_opened = 0;
  if (!build_sources(env, argv[0], m) || !build_files(env, argv[0], m) || !get_uint(env, argv[0], "maxOpened", 65536, &max_opened)) {
    readmap_free(m);
    return NULL;
  }
  m->max_opened = (size_t)max_opened;
  napi_value name;
  napi_threadsafe_function on_error;
  if (napi_create_string_utf8(env, "vmssfs native read error", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_threadsafe_function(env, argv[1], NULL, name, 64, 1, NULL, NULL, NULL, call_on_error, &on_error) != napi_ok) {
    readmap_free(m);
    fail(env, "vmssfs native: cannot create the error callback");
    return NULL;
  }
  /* The callback must not keep the daemon's event loop alive. */
  napi_unref_threadsafe_function(env, on_error);
  unsigned id = pending_add(m, on_error);
  if (id == 0) {
    readmap_free(m);
    napi_release_threadsafe_function(on_error, napi_tsfn_release);
    fail(env, "vmssfs native: out of memory");
    return NULL;
  }
  napi_value out;
  napi_create_uint32(env, id, &out);
  return out;
}

/* discard(id): free a map that no mount took. */
static napi_value js_discard(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  uint32_t id = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc >= 1 && napi_get_value_uint32(env, argv[0], &id) == napi_ok)
  {
    pending *p = pending_take(id);
    if (p != NULL) {
      readmap_free(p->map);
      napi_release_threadsafe_function(p->on_error, napi_tsfn_release);
      free(p);
    }
  }
  return NULL;
}

/* counts() -> {reads, bytes, errors, spliced, lastErrno}, over every mount of this process. */
static napi_value js_counts(napi_env env, napi_callback_info info) {
  (void)info;
  rm_counts c;
  readmap_counts(&c);
  napi_value out;
  if (napi_create_object(env, &out) != napi_ok) return NULL;
  set_number(env, out, "reads", (double)c.reads);
  set_number(env, out, "bytes", (double)c.bytes);
  set_number(env, out, "errors", (double)c.errors);
  set_number(env, out, "spliced", (double)c.spliced);
  set_number(env, out, "lastErrno", (double)c.last_errno);
  return out;
}

/*
 * inheritStderr(on): whether a program this process starts without Node (libfuse starting
 * fusermount to mount for a user that is not root) gets descriptor 2. Node marks its standard
 * descriptors close-on-exec at start-up, so fusermount's reason for refusing a mount ("option
 * allow_other only allowed if 'user_allow_other' is set in /etc/fuse.conf") would be written to a
 * closed descriptor and lost. Returns true when the flag was set as asked.
 */
static napi_value js_inherit_stderr(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  bool on = false;
  bool done = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc >= 1 && napi_get_value_bool(env, argv[0], &on) == napi_ok) {
    int flags = fcntl(STDERR_FILENO, F_GETFD);
    if (flags >= 0) done = fcntl(STDERR_FILENO, F_SETFD, on ? (flags & ~FD_CLOEXEC) : (flags | FD_CLOEXEC)) == 0;
  }
  napi_value out;
  if (napi_get_boolean(env, done, &out) != napi_ok) return NULL;
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  /* Register once per process, however often Node loads the addon. */
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, register_module);
  napi_property_descriptor props[] = {
    { "prepare", NULL, js_prepare, NULL, NULL, NULL, napi_enumerable, NULL },
    { "discard", NULL, js_discard, NULL, NULL, NULL, napi_enumerable, NULL },
    { "counts", NULL, js_counts, NULL, NULL, NULL, napi_enumerable, NULL },
    { "inheritStderr", NULL, js_inherit_stderr, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
