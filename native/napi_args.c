#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "napi_args.h"


int get_uint(napi_env env, napi_value obj, const char *key, uint64_t limit, uint64_t *out) {
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

int get_array(napi_env env, napi_value obj, const char *key, napi_value *arr, uint32_t *len) {
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

int fail(napi_env env, const char *msg) {
  napi_throw_error(env, NULL, msg);
  return 0;
}

int has(napi_env env, napi_value obj, const char *key) {
  bool yes = false;
  return napi_has_named_property(env, obj, key, &yes) == napi_ok && yes;
}


void set_number(napi_env env, napi_value obj, const char *key, double value) {
  napi_value v;
  if (napi_create_double(env, value, &v) == napi_ok) napi_set_named_property(env, obj, key, v);
}

int arg_index(napi_env env, const char *fn, napi_value v, const char *name, size_t limit, size_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) {
    char msg[96];
    snprintf(msg, sizeof msg, "vmssfs native: %s: %s is not a number", fn, name);
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  if (!isfinite(d) || d < 0 || d != floor(d) || d > MAX_SAFE || (uint64_t)d > limit) {
    char msg[128];
    snprintf(msg, sizeof msg, "vmssfs native: %s: %s = %g is not an integer in [0, %zu]", fn, name, d, limit);
    napi_throw_range_error(env, NULL, msg);
    return 0;
  }
  *out = (size_t)d;
  return 1;
}

int arg_buffer(napi_env env, const char *fn, napi_value v, const char *name, uint8_t **data, size_t *len) {
  bool yes = false;
  void *p = NULL;
  if (napi_is_buffer(env, v, &yes) != napi_ok || !yes || napi_get_buffer_info(env, v, &p, len) != napi_ok) {
    char msg[96];
    snprintf(msg, sizeof msg, "vmssfs native: %s: %s is not a Buffer", fn, name);
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  *data = p;
  return 1;
}
