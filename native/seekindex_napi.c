/*
 * The seek index's N-API functions (src/io/seekindex-native.ts wraps them; contract: seekindex.h):
 *   seekNew(blocks, allowance) -> handle     blocks: [{ dataOffset, stored, start, size, raw }]
 *   seekAddBlockAsync(handle, k, stored) -> Promise<void>, indexed on libuv's thread pool;
 *       a damaged block rejects with an Error of code VMSSFS_FASTLZ_DAMAGED, message the reason
 *   seekIndexed(handle) -> blocks indexed
 *   seekStats(handle) -> { points, bytes, indexed }
 *   seekPlan(handle, pos, n) -> [ip, ipEnd, generation, out, outEnd], or null (not indexed)
 *   seekDecode(handle, pos, n, plan, stored, dst, dstAt) -> n, or 'replan'; damage throws as above
 *   seekReadFdAsync(handle, fd, pos, n, dst) -> Promise of n, or null (not indexed): si_read_fd
 *       on the thread pool, as libfuse's threads call it (tests run it under AddressSanitizer)
 * A handle is an object carrying a type tag and a reference to the index (dropped when the
 * object is collected); anything else passed as one throws.
 */
#include <math.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addon.h"
#include "napi_args.h"
#include "seekindex.h"
#include "seekindex_napi.h"

static const napi_type_tag SEEK_TAG = { 0x7d1c0b5e9a2f4c31ULL, 0xb8e64a0d53c9f217ULL };

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  si_unref(data);
}

/* The index inside v, borrowed (no reference taken), or NULL with an exception pending. */
static si_index *borrow(napi_env env, napi_value v) {
  bool tagged = false;
  void *ix = NULL;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_object || napi_check_object_type_tag(env, v, &SEEK_TAG, &tagged) != napi_ok || !tagged ||
      napi_unwrap(env, v, &ix) != napi_ok || ix == NULL) {
    napi_throw_type_error(env, NULL, "vmssfs native: not a seek index handle");
    return NULL;
  }
  return ix;
}

si_index *si_unwrap(napi_env env, napi_value v) {
  si_index *ix = borrow(env, v);
  if (ix != NULL) si_ref(ix);
  return ix;
}

static napi_value damaged_error(napi_env env, const char *reason) {
  napi_value msg, code, err = NULL;
  if (napi_create_string_utf8(env, reason, NAPI_AUTO_LENGTH, &msg) != napi_ok ||
      napi_create_string_utf8(env, "VMSSFS_FASTLZ_DAMAGED", NAPI_AUTO_LENGTH, &code) != napi_ok || napi_create_error(env, code, msg, &err) != napi_ok)
    return NULL;
  return err;
}

static napi_value plain_error(napi_env env, const char *reason) {
  napi_value msg, err = NULL;
  if (napi_create_string_utf8(env, reason, NAPI_AUTO_LENGTH, &msg) != napi_ok || napi_create_error(env, NULL, msg, &err) != napi_ok) return NULL;
  return err;
}

napi_value js_seek_new(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  bool is_array = false;
  uint32_t n = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[0], &n) != napi_ok || n == 0) {
    napi_throw_type_error(env, NULL, "vmssfs native: seekNew: expected a non-empty array of blocks and an allowance");
    return NULL;
  }
  size_t allowance;
  if (!arg_index(env, "seekNew", argv[1], "allowance", (size_t)MAX_SAFE, &allowance)) return NULL;
  si_block *blocks = calloc(n, sizeof *blocks);
  if (blocks == NULL) {
    fail(env, "vmssfs native: out of memory");
    return NULL;
  }
  for (uint32_t k = 0; k < n; k++) {
    napi_value b, raw;
    uint64_t off, stored, start, size;
    bool is_raw = false;
    if (napi_get_element(env, argv[0], k, &b) != napi_ok || !get_uint(env, b, "dataOffset", (uint64_t)MAX_SAFE, &off) ||
        !get_uint(env, b, "stored", UINT32_MAX, &stored) || !get_uint(env, b, "start", (uint64_t)MAX_SAFE, &start) ||
        !get_uint(env, b, "size", UINT32_MAX, &size)) {
      free(blocks);
      return NULL;
    }
    if (napi_get_named_property(env, b, "raw", &raw) != napi_ok || napi_get_value_bool(env, raw, &is_raw) != napi_ok) {
      free(blocks);
      napi_throw_type_error(env, NULL, "vmssfs native: seekNew: raw is not a boolean");
      return NULL;
    }
    blocks[k] = (si_block){ off, (uint32_t)stored, start, (uint32_t)size, is_raw };
  }
  si_index *ix = si_new(blocks, n, allowance);
  free(blocks);
  if (ix == NULL) {
    fail(env, "vmssfs native: seekNew: the blocks do not describe a contiguous stream of blocks up to 64 MiB (or out of memory)");
    return NULL;
  }
  napi_value obj;
  if (napi_create_object(env, &obj) != napi_ok || napi_type_tag_object(env, obj, &SEEK_TAG) != napi_ok ||
      napi_wrap(env, obj, ix, finalize, NULL, NULL) != napi_ok) {
    si_unref(ix);
    fail(env, "vmssfs native: seekNew: cannot make the handle");
    return NULL;
  }
  return obj;
}

/* What every job on libuv's pool holds: the index (a reference taken while queued), the buffer
 * the job works in (kept alive and in place by ref), its work item and its promise. First member
 * of each job, so a job is freed through it. */
typedef struct {
  si_index *ix;
  napi_ref ref;
  napi_async_work work;
  napi_deferred deferred;
} job;

/* Queue j (the first member of an add_job or fd_job) working in buffer `keep`: its promise,
 * or NULL with j freed and an exception pending. */
static napi_value queue_job(napi_env env, const char *what, napi_value keep, job *j, napi_async_execute_callback execute,
                            napi_async_complete_callback complete) {
  napi_value name, promise;
  if (napi_create_reference(env, keep, 1, &j->ref) != napi_ok) {
    free(j);
    fail(env, what);
    return NULL;
  }
  if (napi_create_string_utf8(env, "vmssfs seek index", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, complete, j, &j->work) != napi_ok) {
    napi_delete_reference(env, j->ref);
    free(j);
    fail(env, what);
    return NULL;
  }
  if (napi_create_promise(env, &j->deferred, &promise) != napi_ok || napi_queue_async_work(env, j->work) != napi_ok) {
    napi_delete_async_work(env, j->work);
    napi_delete_reference(env, j->ref);
    free(j);
    fail(env, what);
    return NULL;
  }
  si_ref(j->ix);
  return promise;
}

/* Settle a job's promise with v, or reject it (err NULL: with reason as a plain error), and free it. */
static void finish_job(napi_env env, job *j, napi_value v, napi_value err, const char *reason) {
  if (v != NULL) napi_resolve_deferred(env, j->deferred, v);
  else napi_reject_deferred(env, j->deferred, err != NULL ? err : plain_error(env, reason));
  napi_delete_reference(env, j->ref);
  napi_delete_async_work(env, j->work);
  si_unref(j->ix);
  free(j);
}

typedef struct {
  job base;
  uint32_t k;
  const uint8_t *stored;
  size_t len;
  int rc;
  char reason[SI_REASON];
} add_job;

static void add_execute(napi_env env, void *data) {
  (void)env;
  add_job *j = data;
  j->rc = si_add_block(j->base.ix, j->k, j->stored, j->len, j->reason);
}

static void add_complete(napi_env env, napi_status status, void *data) {
  add_job *j = data;
  napi_value v = NULL;
  if (status != napi_ok) finish_job(env, &j->base, NULL, NULL, "vmssfs native: seekAddBlock: cancelled");
  else if (j->rc != 0) finish_job(env, &j->base, NULL, damaged_error(env, j->reason), j->reason);
  else finish_job(env, &j->base, napi_get_undefined(env, &v) == napi_ok ? v : NULL, NULL, "vmssfs native: seekAddBlock: no result");
}

napi_value js_seek_add_block_async(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) {
    napi_throw_type_error(env, NULL, "vmssfs native: seekAddBlockAsync: expected handle, k, stored");
    return NULL;
  }
  si_index *ix = borrow(env, argv[0]);
  size_t k;
  uint8_t *stored;
  size_t len;
  if (ix == NULL || !arg_index(env, "seekAddBlockAsync", argv[1], "k", UINT32_MAX, &k) ||
      !arg_buffer(env, "seekAddBlockAsync", argv[2], "stored", &stored, &len))
    return NULL;
  add_job *j = calloc(1, sizeof *j);
  if (j == NULL) {
    fail(env, "vmssfs native: out of memory");
    return NULL;
  }
  *j = (add_job){ .base = { .ix = ix }, .k = (uint32_t)k, .stored = stored, .len = len };
  /* The stored bytes stay alive (and where they are) until the block is indexed. */
  return queue_job(env, "vmssfs native: seekAddBlockAsync: cannot queue", argv[2], &j->base, add_execute, add_complete);
}

static si_index *one_handle(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) {
    napi_throw_type_error(env, NULL, "vmssfs native: expected a seek index handle");
    return NULL;
  }
  return borrow(env, argv[0]);
}

napi_value js_seek_indexed(napi_env env, napi_callback_info info) {
  si_index *ix = one_handle(env, info);
  napi_value v;
  if (ix == NULL || napi_create_uint32(env, si_indexed(ix), &v) != napi_ok) return NULL;
  return v;
}

napi_value js_seek_stats(napi_env env, napi_callback_info info) {
  si_index *ix = one_handle(env, info);
  napi_value o;
  if (ix == NULL || napi_create_object(env, &o) != napi_ok) return NULL;
  set_number(env, o, "points", (double)si_points(ix));
  set_number(env, o, "bytes", (double)si_bytes(ix));
  set_number(env, o, "indexed", (double)si_indexed(ix));
  return o;
}

napi_value js_seek_plan(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], arr, v;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) {
    napi_throw_type_error(env, NULL, "vmssfs native: seekPlan: expected handle, pos, n");
    return NULL;
  }
  si_index *ix = borrow(env, argv[0]);
  size_t pos, n;
  if (ix == NULL || !arg_index(env, "seekPlan", argv[1], "pos", (size_t)MAX_SAFE, &pos) || !arg_index(env, "seekPlan", argv[2], "n", UINT32_MAX, &n))
    return NULL;
  si_plan p;
  if (si_plan_read(ix, pos, n, &p) != 0) {
    napi_get_null(env, &v);
    return v;
  }
  double f[5] = { p.ip, p.ip_end, (double)p.generation, (double)p.out, (double)p.out_end };
  if (napi_create_array_with_length(env, 5, &arr) != napi_ok) return NULL;
  for (uint32_t i = 0; i < 5; i++) {
    if (napi_create_double(env, f[i], &v) != napi_ok || napi_set_element(env, arr, i, v) != napi_ok) return NULL;
  }
  return arr;
}

napi_value js_seek_decode(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7], v;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 7) {
    napi_throw_type_error(env, NULL, "vmssfs native: seekDecode: expected handle, pos, n, plan, stored, dst, dstAt");
    return NULL;
  }
  si_index *ix = borrow(env, argv[0]);
  size_t pos, n, at, f[5];
  uint8_t *stored, *dst;
  size_t stored_len, dst_len;
  if (ix == NULL || !arg_index(env, "seekDecode", argv[1], "pos", (size_t)MAX_SAFE, &pos) || !arg_index(env, "seekDecode", argv[2], "n", UINT32_MAX, &n) ||
      !arg_buffer(env, "seekDecode", argv[4], "stored", &stored, &stored_len) || !arg_buffer(env, "seekDecode", argv[5], "dst", &dst, &dst_len) ||
      !arg_index(env, "seekDecode", argv[6], "dstAt", dst_len, &at))
    return NULL;
  bool is_array = false;
  uint32_t plen = 0;
  if (napi_is_array(env, argv[3], &is_array) != napi_ok || !is_array || napi_get_array_length(env, argv[3], &plen) != napi_ok || plen < 5) {
    napi_throw_type_error(env, NULL, "vmssfs native: seekDecode: plan is not seekPlan's array");
    return NULL;
  }
  static const char *names[5] = { "plan ip", "plan ipEnd", "plan generation", "plan out", "plan outEnd" };
  for (uint32_t i = 0; i < 5; i++) {
    if (napi_get_element(env, argv[3], i, &v) != napi_ok || !arg_index(env, "seekDecode", v, names[i], (size_t)MAX_SAFE, &f[i])) return NULL;
  }
  if (n > dst_len - at) {
    napi_throw_range_error(env, NULL, "vmssfs native: seekDecode: n bytes do not fit in dst at dstAt");
    return NULL;
  }
  if (f[0] > f[1] || f[1] > UINT32_MAX || f[1] - f[0] > stored_len) {
    napi_throw_range_error(env, NULL, "vmssfs native: seekDecode: stored holds fewer bytes than the plan needs");
    return NULL;
  }
  if (stored_len > 0 && dst_len > 0 && dst < stored + stored_len && stored < dst + dst_len) {
    napi_throw_range_error(env, NULL, "vmssfs native: seekDecode: stored and dst overlap");
    return NULL;
  }
  int64_t k = si_block_at(ix, pos);
  si_plan p = { k < 0 ? UINT32_MAX : (uint32_t)k, pos, n, (uint32_t)f[0], (uint32_t)f[1], f[2], f[3], f[4] };
  char reason[SI_REASON];
  int64_t rc = si_decode(ix, &p, stored, dst + at, reason);
  if (rc == SI_REPLAN) {
    if (napi_create_string_utf8(env, "replan", NAPI_AUTO_LENGTH, &v) != napi_ok) return NULL;
    return v;
  }
  if (rc < 0) {
    napi_value err = rc == SI_DAMAGED ? damaged_error(env, reason) : plain_error(env, reason);
    if (err != NULL) napi_throw(env, err);
    else fail(env, reason);
    return NULL;
  }
  if (napi_create_double(env, (double)rc, &v) != napi_ok) return NULL;
  return v;
}

typedef struct {
  job base;
  int fd;
  uint64_t pos;
  size_t n;
  uint8_t *dst;
  int64_t rc;
  char reason[SI_REASON];
} fd_job;

static void fd_execute(napi_env env, void *data) {
  (void)env;
  fd_job *j = data;
  j->rc = si_read_fd(j->base.ix, j->fd, j->pos, j->dst, j->n, j->reason);
}

static void fd_complete(napi_env env, napi_status status, void *data) {
  fd_job *j = data;
  napi_value v = NULL;
  if (status != napi_ok) finish_job(env, &j->base, NULL, NULL, "vmssfs native: seekReadFd: cancelled");
  else if (j->rc == SI_NOT_YET) finish_job(env, &j->base, napi_get_null(env, &v) == napi_ok ? v : NULL, NULL, "vmssfs native: seekReadFd: no result");
  else if (j->rc < 0) finish_job(env, &j->base, NULL, j->rc == SI_DAMAGED ? damaged_error(env, j->reason) : NULL, j->reason);
  else finish_job(env, &j->base, napi_create_double(env, (double)j->rc, &v) == napi_ok ? v : NULL, NULL, "vmssfs native: seekReadFd: no result");
}

napi_value js_seek_read_fd_async(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5) {
    napi_throw_type_error(env, NULL, "vmssfs native: seekReadFdAsync: expected handle, fd, pos, n, dst");
    return NULL;
  }
  si_index *ix = borrow(env, argv[0]);
  size_t fd, pos, n, dst_len;
  uint8_t *dst;
  if (ix == NULL || !arg_index(env, "seekReadFdAsync", argv[1], "fd", INT32_MAX, &fd) ||
      !arg_index(env, "seekReadFdAsync", argv[2], "pos", (size_t)MAX_SAFE, &pos) || !arg_buffer(env, "seekReadFdAsync", argv[4], "dst", &dst, &dst_len) ||
      !arg_index(env, "seekReadFdAsync", argv[3], "n", dst_len, &n))
    return NULL;
  fd_job *j = calloc(1, sizeof *j);
  if (j == NULL) {
    fail(env, "vmssfs native: out of memory");
    return NULL;
  }
  *j = (fd_job){ .base = { .ix = ix }, .fd = (int)fd, .pos = pos, .n = n, .dst = dst };
  /* dst stays alive (and where it is) until the read is done. */
  return queue_job(env, "vmssfs native: seekReadFdAsync: cannot queue", argv[4], &j->base, fd_execute, fd_complete);
}
