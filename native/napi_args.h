/* Reading JavaScript arguments in C: every number checked before use, one clear error each. */
#ifndef VMSSFS_NAPI_ARGS_H
#define VMSSFS_NAPI_ARGS_H

#include <node_api.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_SAFE 9007199254740991.0 /* 2^53 - 1: every integer up to it is exact in a double */

/* Throws and returns 0 unless obj[key] is an integer in [0, limit]. */
int get_uint(napi_env env, napi_value obj, const char *key, uint64_t limit, uint64_t *out);

/* obj[key] as an array and its length; throws and returns 0 otherwise. */
int get_array(napi_env env, napi_value obj, const char *key, napi_value *arr, uint32_t *len);

/* Throws an Error with this message; returns 0. */
int fail(napi_env env, const char *msg);

/* Whether obj has the property key. */
int has(napi_env env, napi_value obj, const char *key);

/* obj[key] = value (a number); failures are ignored. */
void set_number(napi_env env, napi_value obj, const char *key, double value);

/* Positional arguments of function fn: throws and returns 0 unless v is an integer in [0, limit]. */
int arg_index(napi_env env, const char *fn, napi_value v, const char *name, size_t limit, size_t *out);

/* Throws and returns 0 unless v is a Buffer; its bytes otherwise. */
int arg_buffer(napi_env env, const char *fn, napi_value v, const char *name, uint8_t **data, size_t *len);

#endif
