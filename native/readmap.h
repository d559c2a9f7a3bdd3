/*
 * readmap: the immutable description of the files served natively, and the read that serves
 * them. Nothing here knows FUSE or Node: mapspec.c builds a map from JavaScript's description of
 * the tree, hands it to the libfuse module, and the module calls readmap_read on libfuse's
 * worker threads. A map never changes after it is built, so readers need no lock.
 */
#ifndef VMSSFS_READMAP_H
#define VMSSFS_READMAP_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "seekindex.h"

/* An encrypted container (VMware's encobj, docs/format.md) beneath a stream: its pages of 4096
 * bytes begin `header` bytes into the file, each holding 4064 bytes of plaintext; the stream's
 * stored bytes are plaintext positions, decrypted here with the data files' key. */
typedef struct {
  uint8_t key[32];       /* wiped in readmap_free */
  uint64_t header;
  uint64_t plain_size;   /* plaintext bytes the file's whole pages hold, at most (checked) */
} rm_encobj;

/* A compressed memory stream (VMware's block container, docs/format.md) held in a source's
 * file: the source's positions are then positions in the decoded stream. Raw blocks are read in
 * place; compressed ones are decoded from the seek index (seekindex.h), which JavaScript's pass
 * fills while the mount runs. */
typedef struct {
  rm_encobj *enc;        /* NULL: the stored bytes lie in the file as they are */
  si_index *index;       /* a reference of the map's own, dropped in readmap_free */
  si_block *blocks;      /* the container's blocks, contiguous from stream position 0 */
  size_t n_blocks;
  uint64_t length;       /* bytes of the stream its intact chain describes: reads past it are JavaScript's */
  uint32_t stalled;      /* 1 + the blocks indexed when a read last gave up waiting for the pass, or 0
                          * (atomic; written after the map is built, like a source's fd) */
} rm_stream;

/* An evidence file: a descriptor of our own and its size when the snapshot was opened. Bytes past
 * that size read as zeros (a truncated copy, reported when the snapshot was parsed); bytes before
 * it that can no longer be read fail the read (EIO).
 *
 * The descriptor is either handed over when the map is built (dup'ed), or, for a VM folder's
 * memory files, opened here on the first read of the source (path != NULL): a folder of many
 * snapshots does not hold every memory file open. Such a file must still be the one that was
 * parsed (same device and inode), or reads of it fail. Once open, fd never changes until
 * readmap_free: it is the only field of a map written after it is built (under open_lock). */
typedef struct {
  int fd;                /* -1 until opened */
  uint64_t size;
  char *path;            /* NULL when the descriptor was handed over */
  uint64_t dev, ino;
  pthread_mutex_t open_lock;
  rm_stream *stream;     /* NULL: the file's bytes as they are */
} rm_source;

/* A stretch of a served file: [start, start+length) of the file holds either bytes of a source
 * from src_offset on, or bytes in hand (headers of the LiME/ELF views). */
typedef struct {
  uint64_t start;
  uint64_t length;
  uint32_t source;       /* index into the map's sources; unused when bytes != NULL */
  uint64_t src_offset;
  const uint8_t *bytes;  /* owned by the map, or NULL */
} rm_extent;

/* A served file: extents sorted by start, not overlapping; what they leave out reads as zeros. */
typedef struct {
  char *path;            /* as libfuse passes it: "/physmem.raw", "/groups/x/y" */
  uint64_t size;
  rm_extent *extents;
  size_t n_extents;
} rm_file;

typedef struct {
  rm_source *sources;
  size_t n_sources;
  size_t max_opened;     /* sources opened on demand, at most (past it: RM_NOT_NOW) */
  size_t opened;         /* ...and so far (atomic) */
  rm_file *files;        /* sorted by path (strcmp), for binary search */
  size_t n_files;
} readmap;

/* Process-wide counts, read by JavaScript for --debug: reads served, bytes, reads failed. */
typedef struct {
  uint64_t reads;
  uint64_t bytes;
  uint64_t errors;
  uint64_t spliced;      /* of the reads, those answered with the source's pages (spliced) */
  int last_errno;        /* errno of the last failed read (EIO for a file that shrank) */
} rm_counts;

/* Why a read failed, for the log: errnum 0 means the source came back short (it shrank). */
typedef struct {
  int errnum;
  int opening;           /* the source could not be opened (errnum says why; ESTALE: replaced) */
  uint32_t source;
  uint64_t position;     /* in the source */
  uint64_t length;
} rm_error;

/* The file served at `path`, or NULL when JavaScript serves it. */
const rm_file *readmap_find(const readmap *m, const char *path);

/* Fill buf with up to `size` bytes of `f` at `offset`, as a FUSE read: the number of bytes
 * (0 past the end), -EIO when a source fails or comes back short (counted, and *why says
 * what failed), or -EAGAIN when a source may not be opened now (RM_NOT_NOW: not counted) or a
 * stream's bytes cannot be served here (not indexed yet, damaged, unreadable, past its intact
 * length: not counted; JavaScript serves the whole read and reports what is wrong). */
int readmap_read(readmap *m, const rm_file *f, char *buf, size_t size, int64_t offset, rm_error *why);

/* Whether the read of `size` bytes at `offset` of f, clamped to the file, lies within one extent
 * of one source that is not a stream and within that source's size at open time: 1 and where (*src, *pos, *len), else
 * 0. Such a read can be handed on as a piece of the source file (spliced) instead of copied. */
int readmap_span(const readmap *m, const rm_file *f, size_t size, int64_t offset, uint32_t *src, uint64_t *pos, size_t *len);

/* Returned for a source the map may not open (it holds max_opened already): the read is not the
 * map's to serve, and goes to JavaScript, whose own bounded pool reads the file. */
#define RM_NOT_NOW (-2)

/* Source i's descriptor, opening it first when it is opened on demand; -1 when it cannot be
 * (counted, and *why says why: errno ESTALE for a path that names another file now), or
 * RM_NOT_NOW. */
int readmap_source_fd(readmap *m, uint32_t i, rm_error *why);

/* Count a read served outside readmap_read: a spliced reply. */
void readmap_count_spliced(uint64_t bytes);

/* Sort the files by path; 0, or -1 when two files share a path. */
int readmap_index(readmap *m);

/* Close the descriptors and free everything; m itself too. NULL is fine. */
void readmap_free(readmap *m);

void readmap_counts(rm_counts *out);

#endif
