/* The seek index's JavaScript handle, for other parts of the addon (mapspec.c). */
#ifndef VMSSFS_SEEKINDEX_NAPI_H
#define VMSSFS_SEEKINDEX_NAPI_H

#include <node_api.h>

#include "seekindex.h"

/* The index inside a handle made by seekNew: a NEW reference (si_unref it when done), or NULL
 * with a JavaScript exception pending when v is not such a handle. */
si_index *si_unwrap(napi_env env, napi_value v);

#endif
