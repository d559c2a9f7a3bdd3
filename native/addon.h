/* The functions the addon exports to JavaScript, by the file that defines them. */
#ifndef VMSSFS_ADDON_H
#define VMSSFS_ADDON_H

#include <node_api.h>

/* mapspec.c: the native read path (src/fuse/native.ts). */
napi_value js_prepare(napi_env env, napi_callback_info info);
napi_value js_discard(napi_env env, napi_callback_info info);
napi_value js_counts(napi_env env, napi_callback_info info);

/* decode_napi.c: the FastLZ decoder (src/io/native-decoder.ts). */
napi_value js_fastlz_decode(napi_env env, napi_callback_info info);
napi_value js_fastlz_decode_async(napi_env env, napi_callback_info info);

/* seekindex_napi.c: the seek index of compressed memory (src/io/seekindex.ts). */
napi_value js_seek_new(napi_env env, napi_callback_info info);
napi_value js_seek_add_block_async(napi_env env, napi_callback_info info);
napi_value js_seek_indexed(napi_env env, napi_callback_info info);
napi_value js_seek_stats(napi_env env, napi_callback_info info);
napi_value js_seek_plan(napi_env env, napi_callback_info info);
napi_value js_seek_decode(napi_env env, napi_callback_info info);
napi_value js_seek_read_fd_async(napi_env env, napi_callback_info info);

/* crypto_napi.c: encobj pages decrypted with this Node's OpenSSL (src/io/encobj.ts). */
napi_value js_encobj_decrypt(napi_env env, napi_callback_info info);

/* stderr_napi.c: descriptor 2 for fusermount while mounting (src/fuse/native.ts). */
napi_value js_inherit_stderr(napi_env env, napi_callback_info info);

#endif
