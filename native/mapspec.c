/*
 * The read path's N-API functions: a read map built from JavaScript's description of the tree
 * (src/fuse/native.ts), and what the module reports back.
 *   prepare(spec, onError) -> id   spec: {sources, files, maxOpened}
 *                         builds a readmap from the tree's extents; the mount then names it with
 *                         the options "modules=vmssfs,vmssfs_map=<id>"; the module's factory,
 *                         called inside fuse_new, takes it over. onError(report) is called on the
 *                         JavaScript thread for each failed read, for the log.
 *   discard(id)           frees a map no mount took (the mount failed).
 *   counts()              {reads, bytes, errors, spliced, lastErrno} for --debug.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <node_api.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addon.h"
#include "encobj.h"
#include "fusemodule.h"
#include "napi_args.h"
#include "pending.h"
#include "readmap.h"
#include "seekindex_napi.h"

/* obj[key] as a boolean; throws and returns 0 otherwise. */
static int get_bool(napi_env env, napi_value obj, const char *key, bool *out) {
  napi_value v;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok || napi_get_value_bool(env, v, out) != napi_ok) {
    char msg[96];
    snprintf(msg, sizeof msg, "vmssfs native: %s is not a boolean", key);
    return fail(env, msg);
  }
  return 1;
}

/* An encrypted stream's {encobj: {key, header, plainSize}}: the data files' key (32 bytes), where
 * the pages begin, and the plaintext they hold, which must fit the file's whole pages. */
static int build_encobj(napi_env env, napi_value s, uint64_t file_size, rm_stream *st) {
  napi_value e, k;
  bool is_buffer = false;
  void *key;
  size_t key_len;
  uint64_t header, plain_size;
  if (napi_get_named_property(env, s, "encobj", &e) != napi_ok || napi_get_named_property(env, e, "key", &k) != napi_ok ||
      napi_is_buffer(env, k, &is_buffer) != napi_ok || !is_buffer || napi_get_buffer_info(env, k, &key, &key_len) != napi_ok || key_len != 32)
    return fail(env, "vmssfs native: an encrypted stream's key must be a Buffer of 32 bytes");
  if (!get_uint(env, e, "header", file_size, &header) ||
      !get_uint(env, e, "plainSize", (file_size - header) / ENCOBJ_PAGE * ENCOBJ_DATA, &plain_size))
    return 0;
  st->enc = calloc(1, sizeof *st->enc);
  if (st->enc == NULL) return fail(env, "vmssfs native: out of memory");
  memcpy(st->enc->key, key, 32);
  st->enc->header = header;
  st->enc->plain_size = plain_size;
  return 1;
}

/* A stream source's {stream, blocks, length}: the seek index's handle (JavaScript's), the
 * container's blocks as container.ts found them ([{dataOffset, stored, start, size, raw}]), and
 * the bytes of the stream its intact chain describes; and, for a stream inside an encrypted
 * container, {encobj} (build_encobj). What is filled in is freed by readmap_free, whatever fails. */
static int build_stream(napi_env env, napi_value s, rm_source *src) {
  rm_stream *st = calloc(1, sizeof *st);
  if (st == NULL) return fail(env, "vmssfs native: out of memory");
  src->stream = st;
  napi_value arr, handle;
  uint32_t n;
  if (!get_array(env, s, "blocks", &arr, &n)) return 0;
  st->blocks = calloc(n ? n : 1, sizeof *st->blocks);
  if (st->blocks == NULL) return fail(env, "vmssfs native: out of memory");
  uint64_t end = 0;
  for (uint32_t k = 0; k < n; k++) {
    napi_value b;
    uint64_t offset, stored, start, size;
    bool raw;
    if (napi_get_element(env, arr, k, &b) != napi_ok) return fail(env, "vmssfs native: bad block");
    if (!get_uint(env, b, "dataOffset", INT64_MAX, &offset) || !get_uint(env, b, "stored", UINT32_MAX, &stored) ||
        !get_uint(env, b, "start", INT64_MAX, &start) || !get_uint(env, b, "size", UINT32_MAX, &size) || !get_bool(env, b, "raw", &raw))
      return 0;
    /* Block lookup and in-place reads rely on these: the blocks tile the stream from 0, and a
     * block's stored bytes lie where pread can reach them. */
    if (start != end || size == 0 || stored == 0 || stored > size || (raw && stored != size) || stored > (uint64_t)INT64_MAX - offset)
      return fail(env, "vmssfs native: a stream's blocks must follow on from 0, each stored in 1 to its size bytes (raw: its size) within 2^63");
    st->blocks[k] = (si_block){ .file_offset = offset, .stored = (uint32_t)stored, .start = start, .size = (uint32_t)size, .raw = raw };
    st->n_blocks = k + 1;
    end = start + size; /* start < 2^63, size < 2^32: no overflow */
  }
  if (!get_uint(env, s, "length", end, &st->length)) return 0;
  if (has(env, s, "encobj") && !build_encobj(env, s, src->size, st)) return 0;
  if (napi_get_named_property(env, s, "stream", &handle) != napi_ok) return fail(env, "vmssfs native: bad stream handle");
  st->index = si_unwrap(env, handle);
  if (st->index == NULL) {
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return 0;
    return fail(env, "vmssfs native: a stream source's stream is not a seek index");
  }
  return 1;
}

/* Sources: [{fd, size}] (the descriptor is duplicated: the map owns its own copy) or
 * [{path, dev, ino, size}] (opened by the map on its first read; see readmap.h); either may also
 * hold a compressed stream, {stream, blocks, length} (build_stream), whose positions its extents
 * then name. */
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
    if (has(env, s, "stream") && !build_stream(env, s, src)) return 0;
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
napi_value js_prepare(napi_env env, napi_callback_info info) {
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
napi_value js_discard(napi_env env, napi_callback_info info) {
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
napi_value js_counts(napi_env env, napi_callback_info info) {
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
