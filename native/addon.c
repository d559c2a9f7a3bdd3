/*
 * vmssfs_native: the addon's entry point. It exports
 *   - the native read path (mapspec.c builds a read map, readmap.c serves it, fusemodule.c is
 *     the libfuse module that answers reads with it on libfuse's worker threads);
 *   - the FastLZ decoder (fastlz.c), called synchronously or on libuv's thread pool
 *     (decode_napi.c);
 *   - the seek index of compressed memory (seekindex.c, seekindex_napi.c), shared with the
 *     native read path;
 *   - decryption of encobj pages with the Node binary's own OpenSSL (encobj.c, crypto_napi.c);
 * and registers the libfuse module once per process. Loading the addon mounts nothing: it can
 * be loaded (and its decoder used) without a mount.
 */
#include <node_api.h>

#include "addon.h"
#include "fusemodule.h"

static napi_value init(napi_env env, napi_value exports) {
  fusemodule_register();
  napi_property_descriptor props[] = {
    { "prepare", NULL, js_prepare, NULL, NULL, NULL, napi_enumerable, NULL },
    { "discard", NULL, js_discard, NULL, NULL, NULL, napi_enumerable, NULL },
    { "counts", NULL, js_counts, NULL, NULL, NULL, napi_enumerable, NULL },
    { "fastlzDecode", NULL, js_fastlz_decode, NULL, NULL, NULL, napi_enumerable, NULL },
    { "fastlzDecodeAsync", NULL, js_fastlz_decode_async, NULL, NULL, NULL, napi_enumerable, NULL },
    { "seekNew", NULL, js_seek_new, NULL, NULL, NULL, napi_enumerable, NULL },
    { "seekAddBlockAsync", NULL, js_seek_add_block_async, NULL, NULL, NULL, napi_enumerable, NULL },
    { "seekIndexed", NULL, js_seek_indexed, NULL, NULL, NULL, napi_enumerable, NULL },
    { "seekStats", NULL, js_seek_stats, NULL, NULL, NULL, napi_enumerable, NULL },
    { "seekPlan", NULL, js_seek_plan, NULL, NULL, NULL, napi_enumerable, NULL },
    { "seekDecode", NULL, js_seek_decode, NULL, NULL, NULL, napi_enumerable, NULL },
    { "seekReadFdAsync", NULL, js_seek_read_fd_async, NULL, NULL, NULL, napi_enumerable, NULL },
    { "inheritStderr", NULL, js_inherit_stderr, NULL, NULL, NULL, napi_enumerable, NULL },
    { "encobjDecrypt", NULL, js_encobj_decrypt, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
