/* Reading JavaScript arguments in C: every number checked before use, one clear error each. */
#ifndef VMSSFS_NAPI_ARGS_H
#define VMSSFS_NAPI_ARGS_H

#include <node_api.h>
#include <stdint.h>

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

#endif
