/*
 * encobjDecrypt(key, raw, pages, from, n, dst, dstOffset) -> true, or false when this Node's
 * OpenSSL cannot be used (the caller decrypts in JavaScript). Decrypts the plaintext bytes
 * [from, from + n) of the first `pages` pages of raw (ciphertext ‖ IV ‖ MAC each) into
 * dst[dstOffset, dstOffset + n) (src/io/encobj.ts). Every index is checked here.
 */
#include <node_api.h>
#include <stdbool.h>

#include "addon.h"
#include "encobj.h"
#include "napi_args.h"

napi_value js_encobj_decrypt(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7], out;
  uint8_t *key, *raw, *dst;
  size_t key_len, raw_len, dst_len, pages, from, n, at;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 7) {
    napi_throw_type_error(env, NULL, "vmssfs native: encobj: expected key, raw, pages, from, n, dst, dstOffset");
    return NULL;
  }
  if (!arg_buffer(env, "encobj", argv[0], "key", &key, &key_len) || !arg_buffer(env, "encobj", argv[1], "raw", &raw, &raw_len) ||
      !arg_buffer(env, "encobj", argv[5], "dst", &dst, &dst_len))
    return NULL;
  if (key_len != 32) {
    napi_throw_range_error(env, NULL, "vmssfs native: encobj: the key is not 32 bytes");
    return NULL;
  }
  if (!arg_index(env, "encobj", argv[2], "pages", raw_len / ENCOBJ_PAGE, &pages) ||
      !arg_index(env, "encobj", argv[3], "from", pages * ENCOBJ_DATA, &from) ||
      !arg_index(env, "encobj", argv[4], "n", pages * ENCOBJ_DATA - from, &n) || !arg_index(env, "encobj", argv[6], "dstOffset", dst_len, &at))
    return NULL;
  if (n > dst_len - at) {
    napi_throw_range_error(env, NULL, "vmssfs native: encobj: n bytes do not fit dst at dstOffset");
    return NULL;
  }
  /* OpenSSL reads raw while it writes dst: they must not share a byte. */
  if (n > 0 && dst + at < raw + pages * ENCOBJ_PAGE && raw < dst + at + n) {
    napi_throw_range_error(env, NULL, "vmssfs native: encobj: raw and dst overlap");
    return NULL;
  }
  napi_get_boolean(env, encobj_decrypt(key, raw, pages, from, n, dst + at) == 0, &out);
  return out;
}
