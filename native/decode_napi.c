/*
 * The decoder's N-API functions (src/io/native-decoder.ts wraps them):
 *   fastlzDecode(input, ip0, out, outStart, outEnd, historyStart, atBlockStart, stopAt, where)
 *       -> bytes produced, or -1 (a match reached before historyStart)
 *   fastlzDecodeAsync(same arguments) -> Promise of the same, decoded on libuv's thread pool
 * input and out are Buffers that do not overlap; stopAt is -1 for no stop; where is a
 * Float64Array of 2 that receives [ip, op] (the resume point), or undefined. A damaged stream
 * throws (rejects with) an Error whose code is VMSSFS_FASTLZ_DAMAGED and whose message is the
 * reason, in the JavaScript decoder's words. Every index is checked here before the decoder
 * (fastlz.c) sees it; while an asynchronous decode runs, JavaScript must leave out alone.
 */
#include <math.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "addon.h"
#include "fastlz.h"
#include "napi_args.h"

#define NARGS 9

/* One decode, its arguments checked: what fastlz.c is given, and what it returned. */
typedef struct {
  const uint8_t *in;
  size_t in_len, ip0;
  uint8_t *out;
  size_t out_start, out_end, history_start, stop_at;
  int at_block_start, has_stop;
  double *where;         /* [ip, op], or NULL */
  int64_t rc;
  flz_result r;
  /* the asynchronous call's own: the work, its promise, and the Buffers kept alive meanwhile */
  napi_async_work work;
  napi_deferred deferred;
  napi_ref refs[3];
} decode_job;

/* Read and check the arguments into j; throws and returns 0 when one is wrong. */
static int parse(napi_env env, napi_callback_info info, decode_job *j, napi_value argv[NARGS]) {
  size_t argc = NARGS;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 8) {
    napi_throw_type_error(env, NULL, "vmssfs native: fastlz: expected input, ip0, out, outStart, outEnd, historyStart, atBlockStart, stopAt[, where]");
    return 0;
  }
  uint8_t *in;
  size_t out_len;
  if (!arg_buffer(env, "fastlz", argv[0], "input", &in, &j->in_len) || !arg_buffer(env, "fastlz", argv[2], "out", &j->out, &out_len)) return 0;
  j->in = in;
  /* ip0 past the input is the decoder's to report (no tokens), as in JavaScript. */
  if (!arg_index(env, "fastlz", argv[1], "ip0", (size_t)MAX_SAFE, &j->ip0) || !arg_index(env, "fastlz", argv[4], "outEnd", out_len, &j->out_end) ||
      !arg_index(env, "fastlz", argv[3], "outStart", j->out_end, &j->out_start) ||
      !arg_index(env, "fastlz", argv[5], "historyStart", j->out_start, &j->history_start))
    return 0;
  bool at_start = false;
  if (napi_get_value_bool(env, argv[6], &at_start) != napi_ok) {
    napi_throw_type_error(env, NULL, "vmssfs native: fastlz: atBlockStart is not a boolean");
    return 0;
  }
  j->at_block_start = at_start;
  double stop;
  if (napi_get_value_double(env, argv[7], &stop) == napi_ok && stop == -1) {
    j->has_stop = 0;
    j->stop_at = 0;
  } else {
    if (!arg_index(env, "fastlz", argv[7], "stopAt", (size_t)MAX_SAFE, &j->stop_at)) return 0;
    j->has_stop = 1;
  }
  j->where = NULL;
  napi_valuetype t = napi_undefined;
  if (argc > 8 && napi_typeof(env, argv[8], &t) == napi_ok && t != napi_undefined) {
    bool is_ta = false;
    napi_typedarray_type type;
    size_t n;
    void *data;
    if (napi_is_typedarray(env, argv[8], &is_ta) != napi_ok || !is_ta ||
        napi_get_typedarray_info(env, argv[8], &type, &n, &data, NULL, NULL) != napi_ok || type != napi_float64_array || n < 2) {
      napi_throw_type_error(env, NULL, "vmssfs native: fastlz: where is not a Float64Array of 2");
      return 0;
    }
    j->where = data;
  }
  /* The decoder reads input while it writes out: they must not share a byte. */
  if (j->in_len > 0 && out_len > 0 && (const uint8_t *)j->out < j->in + j->in_len && j->in < (const uint8_t *)j->out + out_len) {
    napi_throw_range_error(env, NULL, "vmssfs native: fastlz: input and out overlap");
    return 0;
  }
  return 1;
}

static void run(decode_job *j) {
  j->rc = flz_decode(j->in, j->in_len, j->ip0, j->out, j->out_start, j->out_end, j->history_start, j->at_block_start, j->has_stop,
                     j->stop_at, &j->r);
}

/* The result for JavaScript: 1 and a number, or 0 and (damaged) an Error to throw or reject
 * with; *value is NULL when not even that could be made. */
static int result(napi_env env, decode_job *j, napi_value *value) {
  if (j->where != NULL) {
    j->where[0] = (double)j->r.ip;
    j->where[1] = (double)j->r.op;
  }
  *value = NULL;
  if (j->rc != FLZ_DAMAGED) return napi_create_double(env, (double)j->rc, value) == napi_ok;
  napi_value msg, code;
  if (napi_create_string_utf8(env, j->r.reason, NAPI_AUTO_LENGTH, &msg) != napi_ok ||
      napi_create_string_utf8(env, "VMSSFS_FASTLZ_DAMAGED", NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_error(env, code, msg, value) != napi_ok)
    *value = NULL;
  return 0;
}

/* An Error for a result that could not be made (out of memory in the engine). */
static napi_value no_result(napi_env env) {
  napi_value msg, err = NULL;
  if (napi_create_string_utf8(env, "vmssfs native: fastlz: cannot make the result", NAPI_AUTO_LENGTH, &msg) == napi_ok)
    napi_create_error(env, NULL, msg, &err);
  return err;
}

napi_value js_fastlz_decode(napi_env env, napi_callback_info info) {
  decode_job j;
  napi_value argv[NARGS], out;
  if (!parse(env, info, &j, argv)) return NULL;
  run(&j);
  if (result(env, &j, &out)) return out;
  napi_throw(env, out != NULL ? out : no_result(env));
  return NULL;
}

static void execute(napi_env env, void *data) {
  (void)env;
  run(data);
}

static void complete(napi_env env, napi_status status, void *data) {
  decode_job *j = data;
  napi_value value = NULL;
  if (status != napi_ok) {
    napi_value msg;
    if (napi_create_string_utf8(env, "vmssfs native: fastlz: the decode was cancelled", NAPI_AUTO_LENGTH, &msg) == napi_ok)
      napi_create_error(env, NULL, msg, &value);
    napi_reject_deferred(env, j->deferred, value != NULL ? value : no_result(env));
  } else if (result(env, j, &value)) {
    napi_resolve_deferred(env, j->deferred, value);
  } else {
    napi_reject_deferred(env, j->deferred, value != NULL ? value : no_result(env));
  }
  for (int i = 0; i < 3; i++) {
    if (j->refs[i] != NULL) napi_delete_reference(env, j->refs[i]);
  }
  napi_delete_async_work(env, j->work);
  free(j);
}

napi_value js_fastlz_decode_async(napi_env env, napi_callback_info info) {
  decode_job *j = calloc(1, sizeof *j);
  if (j == NULL) {
    napi_throw_error(env, NULL, "vmssfs native: out of memory");
    return NULL;
  }
  napi_value argv[NARGS], name, promise;
  if (!parse(env, info, j, argv)) {
    free(j);
    return NULL;
  }
  /* Keep input, out and where alive (and their memory where it is) until the decode completes. */
  int ok = napi_create_reference(env, argv[0], 1, &j->refs[0]) == napi_ok && napi_create_reference(env, argv[2], 1, &j->refs[1]) == napi_ok &&
           (j->where == NULL || napi_create_reference(env, argv[8], 1, &j->refs[2]) == napi_ok) &&
           napi_create_string_utf8(env, "vmssfs fastlz decode", NAPI_AUTO_LENGTH, &name) == napi_ok &&
           napi_create_promise(env, &j->deferred, &promise) == napi_ok;
  if (ok && napi_create_async_work(env, NULL, name, execute, complete, j, &j->work) != napi_ok) ok = 0;
  if (ok && napi_queue_async_work(env, j->work) != napi_ok) {
    napi_delete_async_work(env, j->work);
    ok = 0;
  }
  if (!ok) {
    for (int i = 0; i < 3; i++) {
      if (j->refs[i] != NULL) napi_delete_reference(env, j->refs[i]);
    }
    /* A created promise is left pending: nothing holds it but the throw below. */
    free(j);
    napi_throw_error(env, NULL, "vmssfs native: fastlz: cannot queue the decode");
    return NULL;
  }
  return promise;
}
