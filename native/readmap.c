/* The native read: see readmap.h. */
#define _GNU_SOURCE
#include "readmap.h"
#include "encobj.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Counts shared by every worker thread: relaxed atomics, they only feed --debug. */
static uint64_t count_reads, count_bytes, count_errors, count_spliced;
static int last_errno;

static void count_error(int err) {
  __atomic_fetch_add(&count_errors, 1, __ATOMIC_RELAXED);
  __atomic_store_n(&last_errno, err, __ATOMIC_RELAXED);
}

void readmap_counts(rm_counts *out) {
  out->reads = __atomic_load_n(&count_reads, __ATOMIC_RELAXED);
  out->bytes = __atomic_load_n(&count_bytes, __ATOMIC_RELAXED);
  out->errors = __atomic_load_n(&count_errors, __ATOMIC_RELAXED);
  out->spliced = __atomic_load_n(&count_spliced, __ATOMIC_RELAXED);
  out->last_errno = __atomic_load_n(&last_errno, __ATOMIC_RELAXED);
}

static void count_read(uint64_t bytes) {
  __atomic_fetch_add(&count_reads, 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&count_bytes, bytes, __ATOMIC_RELAXED);
}

void readmap_count_spliced(uint64_t bytes) {
  count_read(bytes);
  __atomic_fetch_add(&count_spliced, 1, __ATOMIC_RELAXED);
}

static int by_path(const void *a, const void *b) {
  return strcmp(((const rm_file *)a)->path, ((const rm_file *)b)->path);
}

int readmap_index(readmap *m) {
  if (m->n_files > 1) qsort(m->files, m->n_files, sizeof *m->files, by_path);
  for (size_t i = 1; i < m->n_files; i++)
    if (strcmp(m->files[i - 1].path, m->files[i].path) == 0) return -1;
  return 0;
}

const rm_file *readmap_find(const readmap *m, const char *path) {
  size_t lo = 0, hi = m->n_files;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(path, m->files[mid].path);
    if (c == 0) return &m->files[mid];
    if (c < 0) hi = mid;
    else lo = mid + 1;
  }
  return NULL;
}

/* Open a source named by path: read-only, close-on-exec, without touching its access time
 * where the kernel allows it, and only if it is still the file that was parsed. */
static int open_source(const rm_source *s) {
  int fd = open(s->path, O_RDONLY | O_CLOEXEC | O_NOATIME);
  if (fd < 0 && errno == EPERM) fd = open(s->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_dev != s->dev || (uint64_t)st.st_ino != s->ino) {
    close(fd);
    return -ESTALE;
  }
  return fd;
}

int readmap_source_fd(readmap *m, uint32_t i, rm_error *why) {
  rm_source *s = &m->sources[i];
  int fd = __atomic_load_n(&s->fd, __ATOMIC_ACQUIRE);
  if (fd >= 0) return fd;
  pthread_mutex_lock(&s->open_lock);
  fd = s->fd;
  if (fd < 0 && s->path == NULL) {
    fd = -EBADF; /* a handed-over descriptor is never missing: cannot happen */
  } else if (fd < 0) {
    if (__atomic_add_fetch(&m->opened, 1, __ATOMIC_RELAXED) > m->max_opened) {
      __atomic_sub_fetch(&m->opened, 1, __ATOMIC_RELAXED);
      pthread_mutex_unlock(&s->open_lock);
      return RM_NOT_NOW;
    }
    fd = open_source(s);
    if (fd >= 0) __atomic_store_n(&s->fd, fd, __ATOMIC_RELEASE);
    else __atomic_sub_fetch(&m->opened, 1, __ATOMIC_RELAXED);
  }
  pthread_mutex_unlock(&s->open_lock);
  if (fd < 0) {
    why->source = i;
    why->opening = 1;
    why->errnum = -fd;
    why->position = 0;
    why->length = s->size;
    count_error(-fd);
    return -1;
  }
  return fd;
}

/*
 * Read [pos, pos+len) of source i into dst. The part within the size at open time must come
 * back whole: a short read means the file shrank under us, and zeros there would misreport the
 * evidence, so it fails (-EIO). The part past that size is zeros, as the parse warnings said.
 */
static int read_source(readmap *m, uint32_t i, uint64_t pos, char *dst, size_t len, rm_error *why) {
  const rm_source *s = &m->sources[i];
  size_t expected = 0;
  if (pos < s->size) expected = (s->size - pos < len) ? (size_t)(s->size - pos) : len;
  int fd = expected > 0 ? readmap_source_fd(m, i, why) : 0;
  if (fd == RM_NOT_NOW) return -EAGAIN;
  if (fd < 0) return -EIO;
  size_t done = 0;
  while (done < expected) {
    /* pos + done < s->size <= INT64_MAX (checked when the map was built): fits off_t. */
    ssize_t n = pread(fd, dst + done, expected - done, (off_t)(pos + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      why->errnum = errno;
      why->position = pos + done;
      why->length = expected - done;
      count_error(errno);
      return -EIO;
    }
    if (n == 0) {
      why->errnum = 0;
      why->position = pos;
      why->length = expected;
      count_error(EIO);
      return -EIO;
    }
    done += (size_t)n;
  }
  if (expected < len) memset(dst + expected, 0, len - expected);
  return 0;
}

/* Index of the block holding stream position pos (< the stream's length, so one does), in the
 * map's own copy of the block table, the one read_stream walks. */
static size_t block_at(const rm_stream *st, uint64_t pos) {
  size_t lo = 0, hi = st->n_blocks;
  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    if (st->blocks[mid].start <= pos) lo = mid;
    else hi = mid;
  }
  return lo;
}

/* The whole of [pos, pos+len) of fd, which lies within the file's size at open time: 1, or 0
 * when it cannot be had (an error, or the file shrank). */
static int pread_whole(int fd, char *dst, size_t len, uint64_t pos) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, dst + done, len - done, (off_t)(pos + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return 0;
    done += (size_t)n;
  }
  return 1;
}

/* Container bytes [from, from+n) as the stream reads them: in place, or decrypted from the
 * encobj pages that hold them. 1, or 0 when they cannot be had (past the file's size at open,
 * a failed or short read, OpenSSL failing). */
static int read_stored(const rm_source *s, int fd, uint64_t from, size_t n, uint8_t *dst) {
  const rm_encobj *e = s->stream->enc;
  if (e == NULL) return from <= s->size && n <= s->size - from && pread_whole(fd, (char *)dst, n, from);
  if (n == 0) return 1;
  if (from > e->plain_size || n > e->plain_size - from) return 0;
  /* plain_size fits the file's whole pages (checked when the map was built): so do these. */
  uint64_t first = from / ENCOBJ_DATA, last = (from + n - 1) / ENCOBJ_DATA;
  size_t pages = (size_t)(last - first + 1);
  uint8_t *raw = malloc(pages * ENCOBJ_PAGE);
  if (raw == NULL) return 0;
  int ok = pread_whole(fd, (char *)raw, pages * ENCOBJ_PAGE, e->header + first * ENCOBJ_PAGE) &&
           encobj_decrypt(e->key, raw, pages, (size_t)(from - first * ENCOBJ_DATA), n, dst) == 0;
  free(raw);
  return ok;
}

/* What fetch_stored reads from: the stream source and its descriptor. */
typedef struct {
  const rm_source *s;
  int fd;
} stored_from;

/* si_fetch for the seek index: a compressed block's stored bytes, through read_stored (in place,
 * or decrypted). Any failure hands the read to JavaScript, which says why: no reason here. */
static int fetch_stored(void *ctx, uint32_t k, uint64_t off, size_t len, uint8_t *dst, char reason[SI_REASON]) {
  (void)k;
  (void)reason;
  const stored_from *c = ctx;
  return read_stored(c->s, c->fd, off, len, dst) ? 0 : SI_IO;
}

/* A read of a block the index pass has not reached waits for it, on this worker thread, while
 * the pass moves: the pass indexes a 4 MiB block in milliseconds, where JavaScript would decode
 * the whole block on its one thread, starving the pass of the event loop that drives it. When
 * no block is indexed for STALL_NS (the pass stopped at damage, or has not started), the read
 * goes to JavaScript, and so do the next ones until the pass moves again. */
#define STALL_NS 200000000L
#define WAIT_STEP_NS 500000L

/* 1 once block k is indexed, 0 to give up (see above). */
static int wait_for_index(rm_stream *st, size_t k) {
  uint32_t seen = si_indexed(st->index);
  if (seen > k) return 1;
  if (__atomic_load_n(&st->stalled, __ATOMIC_RELAXED) == seen + 1) return 0;
  long idle = 0;
  while (idle < STALL_NS) {
    struct timespec step = { 0, WAIT_STEP_NS };
    nanosleep(&step, NULL);
    uint32_t now = si_indexed(st->index);
    if (now > k) return 1;
    if (now != seen) {
      seen = now;
      idle = 0;
    } else {
      idle += WAIT_STEP_NS;
    }
  }
  __atomic_store_n(&st->stalled, seen + 1, __ATOMIC_RELAXED);
  return 0;
}

/*
 * Read stream bytes [pos, pos+len) of stream source i into dst, block by block: raw blocks in
 * place, compressed ones through the seek index. Anything this cannot serve (a block the index
 * has not reached, a damaged block, a failed or short read, bytes past the intact stream) gives
 * -EAGAIN, never zeros, and uncounted: JavaScript then serves the whole request, and fails it
 * with the damage's own reason where there is one. Only a file that cannot be opened fails here,
 * as for any source.
 */
static int read_stream(readmap *m, uint32_t i, uint64_t pos, char *dst, size_t len, rm_error *why) {
  const rm_source *s = &m->sources[i];
  rm_stream *st = s->stream;
  if (pos >= st->length || len > st->length - pos) return -EAGAIN;
  int fd = readmap_source_fd(m, i, why);
  if (fd == RM_NOT_NOW) return -EAGAIN;
  if (fd < 0) return -EIO;
  size_t k = block_at(st, pos);
  stored_from from = { s, fd };
  size_t done = 0;
  while (done < len) {
    /* The blocks are contiguous and end at or past st->length (checked when the map was built),
     * so block k holds pos + done. */
    const si_block *b = &st->blocks[k];
    uint64_t at = pos + done;
    uint64_t within = at - b->start;
    size_t n = len - done;
    if (n > b->size - within) n = (size_t)(b->size - within);
    uint8_t *out = (uint8_t *)dst + done;
    if (b->raw) {
      /* Stored as is: past the file's size at open time it was cut short, which JavaScript reports. */
      if (!read_stored(s, fd, b->file_offset + within, n, out)) return -EAGAIN;
    } else {
      char reason[SI_REASON];
      int64_t got = si_read_with(st->index, at, out, n, fetch_stored, &from, reason);
      if (got == SI_NOT_YET && wait_for_index(st, k)) got = si_read_with(st->index, at, out, n, fetch_stored, &from, reason);
      if (got != (int64_t)n) return -EAGAIN;
    }
    done += n;
    k++;
  }
  return 0;
}

/* Index of the first extent that ends after pos (n_extents when none does). */
static size_t first_extent(const rm_file *f, uint64_t pos) {
  size_t lo = 0, hi = f->n_extents;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const rm_extent *e = &f->extents[mid];
    if (e->start + e->length <= pos) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

int readmap_read(readmap *m, const rm_file *f, char *buf, size_t size, int64_t offset, rm_error *why) {
  if (offset < 0) return -EINVAL;
  uint64_t pos = (uint64_t)offset;
  if (pos >= f->size || size == 0) return 0;
  /* Clamp to the file, and to what the int result can carry (FUSE asks for at most 1 MiB). */
  uint64_t n = f->size - pos;
  if (n > size) n = size;
  if (n > INT_MAX) n = INT_MAX;

  size_t i = first_extent(f, pos);
  uint64_t done = 0;
  while (done < n) {
    uint64_t at = pos + done;
    uint64_t want = n - done;
    const rm_extent *e = i < f->n_extents ? &f->extents[i] : NULL;
    if (e == NULL || e->start > at) {
      /* A hole up to the next extent (or the end of the read): zeros. */
      uint64_t gap = e == NULL ? want : e->start - at;
      if (gap > want) gap = want;
      memset(buf + done, 0, (size_t)gap);
      done += gap;
      continue;
    }
    uint64_t within = at - e->start;
    uint64_t take = e->length - within;
    if (take > want) take = want;
    if (e->bytes != NULL) {
      memcpy(buf + done, e->bytes + within, (size_t)take);
    } else {
      why->source = e->source;
      int rc = m->sources[e->source].stream != NULL ? read_stream(m, e->source, e->src_offset + within, buf + done, (size_t)take, why)
                                                     : read_source(m, e->source, e->src_offset + within, buf + done, (size_t)take, why);
      if (rc < 0) return rc;
    }
    done += take;
    i++;
  }
  count_read(n);
  return (int)n;
}

int readmap_span(const readmap *m, const rm_file *f, size_t size, int64_t offset, uint32_t *src, uint64_t *pos, size_t *len) {
  if (offset < 0 || (uint64_t)offset >= f->size || size == 0) return 0;
  uint64_t at = (uint64_t)offset;
  uint64_t n = f->size - at;
  if (n > size) n = size;
  if (n > INT_MAX) n = INT_MAX;
  size_t i = first_extent(f, at);
  if (i >= f->n_extents) return 0;
  const rm_extent *e = &f->extents[i];
  /* The whole read inside this extent, which holds source bytes... */
  if (e->bytes != NULL || e->start > at || at + n > e->start + e->length) return 0;
  /* ...of a file as it is (a stream's bytes are decoded)... */
  const rm_source *s = &m->sources[e->source];
  if (s->stream != NULL) return 0;
  /* ...that lay within the source when it was opened (past that, the reply is partly zeros). */
  uint64_t from = e->src_offset + (at - e->start);
  if (from > s->size || n > s->size - from) return 0;
  *src = e->source;
  *pos = from;
  *len = (size_t)n;
  return 1;
}

void readmap_free(readmap *m) {
  if (m == NULL) return;
  for (size_t i = 0; i < m->n_sources; i++) {
    rm_source *s = &m->sources[i];
    if (s->fd >= 0) close(s->fd);
    free(s->path);
    pthread_mutex_destroy(&s->open_lock);
    if (s->stream != NULL) {
      if (s->stream->enc != NULL) {
        explicit_bzero(s->stream->enc->key, sizeof s->stream->enc->key);
        free(s->stream->enc);
      }
      if (s->stream->index != NULL) si_unref(s->stream->index);
      free(s->stream->blocks);
      free(s->stream);
    }
  }
  for (size_t i = 0; i < m->n_files; i++) {
    rm_file *f = &m->files[i];
    for (size_t j = 0; j < f->n_extents; j++) free((void *)f->extents[j].bytes);
    free(f->extents);
    free(f->path);
  }
  free(m->sources);
  free(m->files);
  free(m);
}
