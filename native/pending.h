/*
 * Read maps waiting for their mount. JavaScript builds a map (mapspec.c) and gets an id; the
 * mount names it with the option vmssfs_map=<id>, and the libfuse module's factory, called
 * inside fuse_new on another thread, takes it out of this registry. A map no mount took is
 * taken out by discard.
 */
#ifndef VMSSFS_PENDING_H
#define VMSSFS_PENDING_H

#include <node_api.h>

#include "readmap.h"

typedef struct pending {
  unsigned id;
  readmap *map;
  napi_threadsafe_function on_error;
  struct pending *next;
} pending;

/* Register a map and the function that logs its failed reads: its id (never 0), or 0 when out
 * of memory. */
unsigned pending_add(readmap *m, napi_threadsafe_function on_error);

/* Remove and return the entry with this id (NULL when there is none); the caller frees it. */
pending *pending_take(unsigned id);

#endif
