/*
 * The libfuse module "vmssfs" (stacked with modules=vmssfs,vmssfs_map=<id>): answers read for
 * the files of a read map on libfuse's worker threads and hands everything else down to
 * fuse-native's handlers (see fusemodule.c).
 */
#ifndef VMSSFS_FUSEMODULE_H
#define VMSSFS_FUSEMODULE_H

#include <stdint.h>

#include "readmap.h"

/* A failed read on its way to the JavaScript log (mapspec.c hands it to the log function). */
typedef struct {
  char path[4096];
  int64_t offset;
  uint64_t size;
  rm_error why;
} error_report;

/* Register the module with libfuse; once per process, however often it is called. */
void fusemodule_register(void);

#endif
