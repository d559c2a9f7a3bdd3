/*
 * Spliced replies: a read that lies within one extent of one source is answered with the
 * source's pages themselves, spliced from the file into a pipe of the worker thread, which
 * libfuse then splices into /dev/fuse (see splice.c).
 */
#ifndef VMSSFS_SPLICE_H
#define VMSSFS_SPLICE_H

#include <stddef.h>
#include <stdint.h>

/* Reads shorter than this are copied: a splice costs more syscalls than it saves there. */
#define SPLICE_MIN (64 * 1024)

typedef struct {
  int fd[2];   /* [0] handed to libfuse, [1] spliced into */
  size_t size; /* the pipe's capacity */
} thread_pipe;

/* This thread's pipe, empty and able to hold len bytes; NULL when none can be had. */
thread_pipe *pipe_for(size_t len);

/* Splice exactly len bytes of fd at pos into the pipe: 1, or 0 when they did not all come (the
 * pipe is then dropped, and the caller copies instead). */
int splice_whole(int fd, uint64_t pos, thread_pipe *tp, size_t len);

#endif
