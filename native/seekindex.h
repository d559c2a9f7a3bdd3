/*
 * seekindex: random access into VMware's compressed memory stream (docs/format.md) by seek
 * points with sparse windows, as src/io/seekindex-js.ts does in JavaScript. One object per stream,
 * shared by JavaScript (seekindex_napi.c: the index pass, and reads for cat/extract/the JS path)
 * and libfuse's worker threads (readmap.c: the native read path), so it is reference counted and
 * every function here is safe to call from any thread, except si_add_block, which one thread
 * (the index pass) calls for blocks 0, 1, 2... in order.
 *
 * Nothing here trusts a number it did not check: block tables come from JavaScript's parse of
 * the container, stored bytes from the evidence file.
 */
#ifndef VMSSFS_SEEKINDEX_H
#define VMSSFS_SEEKINDEX_H

#include <stddef.h>
#include <stdint.h>

/* One block of the container, as container.ts found it. */
typedef struct {
  uint64_t file_offset; /* where its stored bytes begin in the container file (past its header) */
  uint32_t stored;      /* stored bytes */
  uint64_t start;       /* stream position of its first decoded byte */
  uint32_t size;        /* decoded bytes */
  int raw;              /* stored as is (no tokens; read in place, never indexed) */
} si_block;

typedef struct si_index si_index;

#define SI_REASON 192

/* Returned by si_read / si_decode: the block is not indexed yet (the caller serves it another
 * way), the plan changed under the caller (points merged: plan again), the stored bytes are
 * damaged (reason says why), or reading the stored bytes failed (reason says why). */
#define SI_NOT_YET (-1)
#define SI_REPLAN (-2)
#define SI_DAMAGED (-3)
#define SI_IO (-4)

/* A new index of n blocks (copied), holding at most `allowance` bytes of points and windows
 * (past it, the spacing doubles and points merge pairwise); NULL when out of memory or when the
 * table does not describe a contiguous stream. Its reference count starts at 1. */
si_index *si_new(const si_block *blocks, size_t n, size_t allowance);
void si_ref(si_index *ix);
void si_unref(si_index *ix);

/* Index block k, which must be the next one (si_indexed(ix) == k), from its stored bytes: raw
 * blocks too (no points; their bytes carry the history on). Decodes it over the history the index
 * keeps (zeros before the stream's start: VMware's zero window), records its points and
 * publishes them. 0, or SI_DAMAGED with reason filled (the pass stops there). */
int si_add_block(si_index *ix, uint32_t k, const uint8_t *stored, size_t len, char reason[SI_REASON]);

/* Blocks indexed so far (0..n): blocks below it are served from points. */
uint32_t si_indexed(const si_index *ix);

/* Bytes of points and windows held, and points held. */
size_t si_bytes(const si_index *ix);
size_t si_points(const si_index *ix);

/* A read's plan: stream bytes [pos, pos + n) of block k need stored bytes [ip, ip_end) of that
 * block (offsets into its stored bytes), which decode to stream bytes [out, out_end) (the span
 * between two points, at most the block). `generation` changes whenever points merge. */
typedef struct {
  uint32_t k;
  uint64_t pos;
  size_t n;
  uint32_t ip, ip_end;
  uint64_t generation;
  uint64_t out, out_end;
} si_plan;

/* The block holding stream byte pos, or -1 past the stream's end. */
int64_t si_block_at(const si_index *ix, uint64_t pos);

/* Plan a read lying within one compressed, indexed block: 0, or SI_NOT_YET. */
int si_plan_read(si_index *ix, uint64_t pos, size_t n, si_plan *plan);

/* Decode a planned read from the stored bytes [plan.ip, plan.ip_end) into dst[0, n): n, or
 * SI_REPLAN (the points changed since the plan), or SI_DAMAGED with reason. */
int64_t si_decode(si_index *ix, const si_plan *plan, const uint8_t *stored, uint8_t *dst, char reason[SI_REASON]);

/* Fetches len stored bytes of block k from the container file at offset off into dst: 0, or
 * SI_IO with reason filled. ctx is the caller's (a descriptor, a decrypting reader). */
typedef int (*si_fetch)(void *ctx, uint32_t k, uint64_t off, size_t len, uint8_t *dst, char reason[SI_REASON]);

/* Plan, fetch the stored bytes the plan needs (at the block's file_offset + ip) and decode, in one
 * call (libfuse's threads), replanning when points merge meanwhile: n, SI_NOT_YET, SI_DAMAGED or
 * SI_IO with reason. The read must lie within one block; raw blocks are the caller's to read. */
int64_t si_read_with(si_index *ix, uint64_t pos, uint8_t *dst, size_t n, si_fetch fetch, void *ctx, char reason[SI_REASON]);

/* si_read_with, fetching with pread(fd). */
int64_t si_read_fd(si_index *ix, int fd, uint64_t pos, uint8_t *dst, size_t n, char reason[SI_REASON]);

#endif
