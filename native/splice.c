#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "splice.h"

/* Spliced replies (used by fusemodule.c's read_buf).
 * A read that lies within one extent of one source is answered with the source's pages
 * themselves: spliced from the file into a pipe of this worker thread, which libfuse then
 * splices into /dev/fuse. The bytes are copied once, by the kernel, instead of twice (pread into
 * a buffer, then write to the device): it halves the daemon's work on long reads (yara, dd).
 *
 * The guarantee of the copying path holds: the splice must bring every byte asked for, or the
 * read falls back to pread, which answers EIO for a source that shrank. The pipe holds
 * references to the source's pages, not a range to read later, so libfuse cannot come back
 * short. Small reads keep the copying path: a splice costs more syscalls than it saves there. */

static pthread_key_t pipe_key;
static int pipe_key_ok;

static void pipe_free(void *p) {
  thread_pipe *tp = p;
  close(tp->fd[0]);
  close(tp->fd[1]);
  free(tp);
}

static void make_pipe_key(void) {
  pipe_key_ok = pthread_key_create(&pipe_key, pipe_free) == 0;
}

static void pipe_drop(thread_pipe *tp) {
  pthread_setspecific(pipe_key, NULL);
  pipe_free(tp);
}

/* This thread's pipe, empty and able to hold len bytes; NULL when none can be had. A pipe left
 * with bytes in it (libfuse failed before taking them) is never reused: its bytes are stale. */
thread_pipe *pipe_for(size_t len) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, make_pipe_key);
  if (!pipe_key_ok) return NULL;
  thread_pipe *tp = pthread_getspecific(pipe_key);
  int queued = 0;
  if (tp != NULL && (ioctl(tp->fd[0], FIONREAD, &queued) != 0 || queued != 0)) {
    pipe_drop(tp);
    tp = NULL;
  }
  if (tp == NULL) {
    tp = malloc(sizeof *tp);
    /* Non-blocking: a full pipe fails the splice (and the read falls back) instead of hanging. */
    if (tp == NULL || pipe2(tp->fd, O_CLOEXEC | O_NONBLOCK) != 0) {
      free(tp);
      return NULL;
    }
    int cap = fcntl(tp->fd[0], F_GETPIPE_SZ);
    tp->size = cap > 0 ? (size_t)cap : 0;
    if (pthread_setspecific(pipe_key, tp) != 0) {
      pipe_free(tp);
      return NULL;
    }
  }
  if (tp->size < len) {
    int cap = len <= INT_MAX ? fcntl(tp->fd[0], F_SETPIPE_SZ, (int)len) : -1;
    if (cap < 0) return NULL; /* past /proc/sys/fs/pipe-max-size: copy instead */
    tp->size = (size_t)cap;
  }
  return tp;
}

/* Splice exactly len bytes of fd at pos into the pipe: 1, or 0 when they did not all come (the
 * pipe is then dropped, and the caller copies instead). */
int splice_whole(int fd, uint64_t pos, thread_pipe *tp, size_t len) {
  loff_t at = (loff_t)pos; /* pos + len <= the source's size <= INT64_MAX: checked when built */
  size_t done = 0;
  while (done < len) {
    ssize_t n = splice(fd, &at, tp->fd[1], NULL, len - done, SPLICE_F_MOVE);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      pipe_drop(tp);
      return 0;
    }
    done += (size_t)n;
  }
  return 1;
}
