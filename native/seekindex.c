/*
 * The seek index of VMware's compressed memory stream (contract: seekindex.h; the idea:
 * src/io/seekindex.ts, docs/performance.md).
 *
 * A point every `spacing` bytes of output (a token boundary) records where the tokens resume
 * (block, ip) and a sparse window: the bytes before the point that the tokens up to the next
 * point copy. A window is packed as pieces: u32 distance back from the point, u32 length (top
 * bit: a run of one byte value, stored once) and the bytes. Every window byte lies within
 * HIST bytes before its point (the farthest a match reaches), so a read decodes into
 * [HIST bytes of history | the span's output] after writing the windows of the points it passes.
 *
 * Locking: the pass (si_add_block, one thread) is the only writer of the points. It builds a
 * block's points and any thinned array outside the lock, reading the points without it (no one
 * else writes them), and takes the lock exclusively only to append or swap. Readers take it
 * shared while they plan or copy windows out, never while they read files or decode.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fastlz.h"
#include "seekindex.h"

/* History a read or a block decodes over: the farthest a match reaches, rounded up. */
#define HIST (FLZ_MAX_DISTANCE + 1)
/* Output between points at first. */
#define SPACING (32 * 1024)
/* A block's decoded size is at most this (VMware writes 4 MiB): bounds every buffer here. */
#define MAX_BLOCK (64u << 20)
/* What a point costs besides its window: its entry and the window's allocation. */
#define POINT_COST 48
/* A run of one value at least this long is stored as a length (a piece header is 8 bytes). */
#define MIN_RUN 24
/* Gaps up to this between referenced intervals are kept as bytes: cheaper than a new piece. */
#define GAP 8
/* A thread keeps a scratch buffer up to this size between reads; larger ones are freed after. */
#define KEEP_SCRATCH (1u << 20)

typedef struct {
  uint64_t out;   /* stream position of the first byte the tokens from here produce */
  uint32_t block;
  uint32_t ip;    /* offset of the next token in the block's stored bytes */
  uint8_t *win;   /* packed window (NULL when empty) */
  uint32_t win_len;
} point;

struct si_index {
  atomic_int refs;
  si_block *blocks;
  size_t n;
  size_t allowance;
  pthread_rwlock_t lock;
  /* Under the lock (the pass reads them without it: it is their only writer). */
  point *pts;
  size_t npts, cap;
  size_t bytes;
  uint64_t generation;
  atomic_uint indexed;
  atomic_int adding; /* a block is being indexed: a second caller is refused, not raced */
  /* The pass's own. */
  uint64_t spacing;
  uint8_t *work;      /* [HIST bytes of history | the block being indexed] */
  size_t work_cap;
};

/* ---------- reference counting ---------- */

si_index *si_new(const si_block *blocks, size_t n, size_t allowance) {
  if (n == 0 || n > UINT32_MAX / 2) return NULL;
  uint64_t pos = 0;
  for (size_t k = 0; k < n; k++) {
    const si_block *b = &blocks[k];
    /* Contiguous, every block of bounded size, raw blocks stored as they read. */
    if (b->start != pos || b->size == 0 || b->size > MAX_BLOCK || b->stored == 0 || (b->raw && b->stored != b->size) ||
        b->file_offset > (uint64_t)INT64_MAX - b->stored)
      return NULL;
    pos += b->size;
  }
  si_index *ix = calloc(1, sizeof *ix);
  if (ix == NULL) return NULL;
  ix->blocks = malloc(n * sizeof *blocks);
  if (ix->blocks == NULL) {
    free(ix);
    return NULL;
  }
  memcpy(ix->blocks, blocks, n * sizeof *blocks);
  ix->n = n;
  ix->allowance = allowance;
  ix->spacing = SPACING;
  atomic_init(&ix->refs, 1);
  atomic_init(&ix->indexed, 0);
  atomic_init(&ix->adding, 0);
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
#ifdef __GLIBC__
  /* Readers come from many threads all the time: the pass must still get its turn. */
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
  int rc = pthread_rwlock_init(&ix->lock, &attr);
  pthread_rwlockattr_destroy(&attr);
  if (rc != 0) {
    free(ix->blocks);
    free(ix);
    return NULL;
  }
  return ix;
}

void si_ref(si_index *ix) {
  atomic_fetch_add_explicit(&ix->refs, 1, memory_order_relaxed);
}

void si_unref(si_index *ix) {
  if (ix == NULL || atomic_fetch_sub_explicit(&ix->refs, 1, memory_order_acq_rel) != 1) return;
  for (size_t i = 0; i < ix->npts; i++) free(ix->pts[i].win);
  free(ix->pts);
  free(ix->work);
  free(ix->blocks);
  pthread_rwlock_destroy(&ix->lock);
  free(ix);
}

uint32_t si_indexed(const si_index *ix) {
  return atomic_load_explicit(&((si_index *)ix)->indexed, memory_order_acquire);
}

size_t si_bytes(const si_index *ix) {
  si_index *m = (si_index *)ix;
  pthread_rwlock_rdlock(&m->lock);
  size_t b = m->bytes;
  pthread_rwlock_unlock(&m->lock);
  return b;
}

size_t si_points(const si_index *ix) {
  si_index *m = (si_index *)ix;
  pthread_rwlock_rdlock(&m->lock);
  size_t p = m->npts;
  pthread_rwlock_unlock(&m->lock);
  return p;
}

int64_t si_block_at(const si_index *ix, uint64_t pos) {
  const si_block *b = ix->blocks;
  size_t n = ix->n;
  if (pos >= b[n - 1].start + b[n - 1].size) return -1;
  size_t lo = 0, hi = n - 1;
  while (lo < hi) {
    size_t mid = (lo + hi + 1) / 2;
    if (b[mid].start <= pos) lo = mid;
    else hi = mid - 1;
  }
  return (int64_t)lo;
}

/* ---------- windows ---------- */

/* Stream positions as signed numbers: references into the zero window lie before 0. */
typedef struct {
  int64_t s, e;
} interval;

typedef struct {
  uint8_t *p;
  size_t len, cap;
} bytes_buf;

static int put(bytes_buf *b, const void *src, size_t n) {
  if (n > b->cap - b->len) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (p == NULL) return 0;
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, src, n);
  b->len += n;
  return 1;
}

/* The packed bytes, their allocation cut to size (windows live as long as the index). */
static uint8_t *fit(bytes_buf *b) {
  if (b->len == b->cap || b->p == NULL) return b->p;
  uint8_t *p = realloc(b->p, b->len);
  return p != NULL ? p : b->p;
}

static int put_piece(bytes_buf *b, uint32_t back, uint32_t len, int run, const uint8_t *bytes) {
  uint32_t head[2] = { back, run ? len | 0x80000000u : len };
  return put(b, head, sizeof head) && put(b, bytes, run ? 1 : len);
}

/*
 * Pack the bytes src[0, len) of stream positions [s, s + len) as pieces relative to `point`:
 * runs of one value of MIN_RUN or more as lengths, the rest as bytes.
 */
static int pack_interval(bytes_buf *b, uint64_t point, uint64_t s, const uint8_t *src, size_t len) {
  size_t lit = 0; /* start of the pending literal piece */
  size_t i = 0;
  while (i < len) {
    size_t j = i + 1;
    while (j < len && src[j] == src[i]) j++;
    if (j - i >= MIN_RUN) {
      if (i > lit && !put_piece(b, (uint32_t)(point - (s + lit)), (uint32_t)(i - lit), 0, src + lit)) return 0;
      if (!put_piece(b, (uint32_t)(point - (s + i)), (uint32_t)(j - i), 1, src + i)) return 0;
      lit = j;
    }
    i = j;
  }
  if (len > lit && !put_piece(b, (uint32_t)(point - (s + lit)), (uint32_t)(len - lit), 0, src + lit)) return 0;
  return 1;
}

static int cmp_interval(const void *a, const void *b) {
  const interval *x = a, *y = b;
  return x->s < y->s ? -1 : x->s > y->s;
}

/* The window of a point: intervals of stream positions before it (any order, overlapping),
 * whose bytes `hist` holds: hist[p - base] is stream byte p. */
static int make_window(interval *iv, size_t n, int64_t at, const uint8_t *hist, int64_t base, point *pt) {
  pt->win = NULL;
  pt->win_len = 0;
  if (n == 0) return 1;
  qsort(iv, n, sizeof *iv, cmp_interval);
  bytes_buf b = { NULL, 0, 0 };
  int64_t s = iv[0].s, e = iv[0].e;
  for (size_t i = 1; i <= n; i++) {
    if (i < n && iv[i].s <= e + GAP) {
      if (iv[i].e > e) e = iv[i].e;
      continue;
    }
    if (!pack_interval(&b, (uint64_t)at, (uint64_t)s, hist + (s - base), (size_t)(e - s))) {
      free(b.p);
      return 0;
    }
    if (i < n) {
      s = iv[i].s;
      e = iv[i].e;
    }
  }
  pt->win = fit(&b);
  pt->win_len = (uint32_t)b.len;
  return 1;
}

/* Write a window into buf, where buf[at] is stream byte `point`: checked against [0, at). */
static int fill_window(const point *pt, uint8_t *buf, size_t at) {
  const uint8_t *w = pt->win;
  size_t o = 0;
  while (o < pt->win_len) {
    if (pt->win_len - o < 8) return 0;
    uint32_t head[2];
    memcpy(head, w + o, 8);
    o += 8;
    size_t len = head[1] & 0x7fffffffu;
    if (head[0] > at || len > head[0]) return 0;
    uint8_t *d = buf + (at - head[0]);
    if (head[1] & 0x80000000u) {
      if (o >= pt->win_len) return 0;
      memset(d, w[o], len);
      o++;
    } else {
      if (len > pt->win_len - o) return 0;
      memcpy(d, w + o, len);
      o += len;
    }
  }
  return 1;
}

/* ---------- the pass ---------- */

/* Make room for HIST + size bytes of work, keeping the history at its start. */
static int work_room(si_index *ix, size_t size) {
  size_t need = HIST + size;
  if (ix->work_cap >= need) return 1;
  uint8_t *w = realloc(ix->work, need);
  if (w == NULL) return 0;
  if (ix->work == NULL) memset(w, 0, HIST); /* VMware's window is zeros before the stream */
  ix->work = w;
  ix->work_cap = need;
  return 1;
}

typedef struct {
  point *p;
  size_t n, cap;
} point_list;

static int push_point(point_list *l, const point *p) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 64;
    point *q = realloc(l->p, cap * sizeof *q);
    if (q == NULL) return 0;
    l->p = q;
    l->cap = cap;
  }
  l->p[l->n++] = *p;
  return 1;
}

static void free_points(point *p, size_t n) {
  for (size_t i = 0; i < n; i++) free(p[i].win);
}

/*
 * The points of compressed block k, decoded in ix->work (history included): walk its control
 * bytes (sound: the block decoded), ending a span at the first token boundary `spacing` bytes of
 * output after its start, and record for each span the bytes before it that its tokens copy.
 */
static int walk_block(si_index *ix, uint32_t k, const uint8_t *in, size_t in_len, point_list *out) {
  const si_block *b = &ix->blocks[k];
  const int64_t base = (int64_t)b->start - HIST; /* ix->work[0] */
  interval *iv = NULL;
  size_t niv = 0, civ = 0;
  size_t ip = 0;
  int64_t op = (int64_t)b->start, span_op = op;
  size_t span_ip = 0;
  int first = 1, ok = 1;
  for (;;) {
    int end = ip >= in_len;
    if (end || (uint64_t)(op - span_op) >= ix->spacing) {
      point p = { (uint64_t)span_op, k, (uint32_t)span_ip, NULL, 0 };
      if (!make_window(iv, niv, span_op, ix->work, base, &p) || !push_point(out, &p)) {
        free(p.win);
        ok = 0;
        break;
      }
      niv = 0;
      span_ip = ip;
      span_op = op;
      if (end) break;
    }
    size_t ctrl = in[ip++];
    if (first) {
      ctrl &= 31;
      first = 0;
    }
    if (ctrl < 32) {
      ip += ctrl + 1;
      op += (int64_t)ctrl + 1;
      continue;
    }
    size_t len = (ctrl >> 5) + 2;
    if (len == 9) {
      size_t v;
      do {
        if (ip >= in_len) goto unsound;
        v = in[ip++];
        len += v;
      } while (v == 255);
    }
    if (ip >= in_len) goto unsound;
    size_t lo = in[ip++], dist;
    if ((ctrl & 31) == 31 && lo == 255) {
      if (in_len - ip < 2) goto unsound;
      dist = 8192 + ((size_t)in[ip] << 8 | in[ip + 1]);
      ip += 2;
    } else {
      dist = ((ctrl & 31) << 8 | lo) + 1;
    }
    if ((int64_t)dist > op - base) goto unsound;
    int64_t ref = op - (int64_t)dist;
    if (ref < span_op) {
      if (niv == civ) {
        size_t c = civ ? 2 * civ : 256;
        interval *q = realloc(iv, c * sizeof *q);
        if (q == NULL) {
          ok = 0;
          break;
        }
        iv = q;
        civ = c;
      }
      iv[niv].s = ref;
      iv[niv].e = ref + (int64_t)len < span_op ? ref + (int64_t)len : span_op;
      niv++;
    }
    op += (int64_t)len;
  }
  free(iv);
  return ok;
unsound:
  free(iv);
  return 0;
}

/* Points held: their entries and windows. */
static size_t cost_of(const point *p, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i++) c += POINT_COST + p[i].win_len;
  return c;
}

/*
 * Merge points pairwise within each block and double the spacing: a merged point's window is
 * its own plus what the dropped point's window held from before it (all within HIST of the
 * first point: the second's tokens reach no farther back). 1 when points merged, 0 when none
 * could, -1 out of memory. Builds the new array outside the lock; swaps under it.
 */
static uint8_t *merged_window(const point *a, const point *b, uint8_t *val, uint8_t *have, uint32_t *len) {
  /* tmp[HIST] is stream byte a->out: both windows are written into it, then the marked
   * positions before a->out are packed, contiguous runs only (no unknown byte enters a window). */
  const size_t at = HIST;
  uint8_t *tmp = malloc(HIST + (size_t)(b->out - a->out));
  if (tmp == NULL) return NULL;
  memset(have, 0, HIST);
  for (int w = 0; w < 2; w++) {
    const point *q = w == 0 ? a : b;
    size_t qat = at + (size_t)(q->out - a->out);
    if (!fill_window(q, tmp, qat)) {
      free(tmp);
      return NULL;
    }
    for (size_t o = 0; o + 8 <= q->win_len;) {
      uint32_t head[2];
      memcpy(head, q->win + o, 8);
      size_t n = head[1] & 0x7fffffffu;
      o += 8 + ((head[1] & 0x80000000u) ? 1 : n);
      size_t s = qat - head[0]; /* fill_window checked it */
      if (s >= at) continue;    /* within a's span: decoded there, not history */
      size_t e = s + n < at ? s + n : at;
      memcpy(val + s, tmp + s, e - s);
      memset(have + s, 1, e - s);
    }
  }
  free(tmp);
  bytes_buf wb = { NULL, 0, 0 };
  for (size_t s = 0; s < HIST;) {
    if (!have[s]) {
      s++;
      continue;
    }
    size_t e = s;
    while (e < HIST && have[e]) e++;
    if (!pack_interval(&wb, a->out, a->out - HIST + s, val + s, e - s)) {
      free(wb.p);
      return NULL;
    }
    s = e;
  }
  *len = (uint32_t)wb.len;
  /* An empty merged window is a NULL one; say so apart from failure with a sentinel. */
  return wb.p != NULL ? fit(&wb) : (uint8_t *)val;
}

static int thin(si_index *ix) {
  size_t n = ix->npts;
  point *old = ix->pts;
  point *kept = malloc((n ? n : 1) * sizeof *kept);
  uint8_t *made = calloc(n ? n : 1, 1); /* kept[m]'s window is new */
  uint8_t *val = malloc(HIST);
  uint8_t *have = malloc(HIST);
  int rc = -1;
  size_t m = 0;
  if (kept == NULL || made == NULL || val == NULL || have == NULL) goto out;
  for (size_t i = 0; i < n; i++) {
    kept[m] = old[i];
    if (i + 1 < n && old[i + 1].block == old[i].block) {
      uint32_t len = 0;
      uint8_t *w = merged_window(&old[i], &old[i + 1], val, have, &len);
      if (w == NULL) goto out;
      kept[m].win = w == val ? NULL : w;
      kept[m].win_len = len;
      made[m] = 1;
      i++;
    }
    m++;
  }
  if (m == n) {
    rc = 0;
    goto out;
  }
  pthread_rwlock_wrlock(&ix->lock);
  ix->pts = kept;
  ix->npts = m;
  ix->cap = n;
  ix->bytes = cost_of(kept, m);
  ix->generation++;
  pthread_rwlock_unlock(&ix->lock);
  ix->spacing *= 2;
  /* The old windows of merged pairs are no longer referenced: walk both arrays in step. */
  for (size_t i = 0, j = 0; j < m; j++) {
    if (made[j]) {
      free(old[i].win);
      free(old[i + 1].win);
      i += 2;
    } else {
      i++;
    }
  }
  free(old);
  kept = NULL;
  m = 0;
  rc = 1;
out:
  for (size_t j = 0; j < m; j++) {
    if (made[j]) free(kept[j].win);
  }
  free(kept);
  free(made);
  free(val);
  free(have);
  return rc;
}

static int add_block(si_index *ix, uint32_t k, const uint8_t *stored, size_t len, char reason[SI_REASON]);

int si_add_block(si_index *ix, uint32_t k, const uint8_t *stored, size_t len, char reason[SI_REASON]) {
  reason[0] = '\0';
  int idle = 0;
  if (!atomic_compare_exchange_strong(&ix->adding, &idle, 1)) {
    snprintf(reason, SI_REASON, "block %u: another block is being indexed", k);
    return SI_DAMAGED;
  }
  int rc = add_block(ix, k, stored, len, reason);
  atomic_store(&ix->adding, 0);
  return rc;
}

static int add_block(si_index *ix, uint32_t k, const uint8_t *stored, size_t len, char reason[SI_REASON]) {
  if (k != si_indexed(ix) || k >= ix->n) {
    snprintf(reason, SI_REASON, "block %u is not the next to index (%u)", k, si_indexed(ix));
    return SI_DAMAGED;
  }
  const si_block *b = &ix->blocks[k];
  if (len != b->stored) {
    snprintf(reason, SI_REASON, "block %u has %zu stored bytes, its header says %u", k, len, b->stored);
    return SI_DAMAGED;
  }
  if (!work_room(ix, b->size)) {
    snprintf(reason, SI_REASON, "out of memory indexing block %u", k);
    return SI_DAMAGED;
  }
  point_list pl = { NULL, 0, 0 };
  if (b->raw) {
    memcpy(ix->work + HIST, stored, b->size);
  } else {
    flz_result r;
    int64_t rc = flz_decode(stored, len, 0, ix->work, HIST, HIST + (size_t)b->size, 0, 1, 0, 0, &r);
    if (rc < 0) {
      /* A match cannot reach before the zero history (it is the farthest distance): damage. */
      snprintf(reason, SI_REASON, "%s", rc == FLZ_DAMAGED ? r.reason : "a match reaches before the window");
      return SI_DAMAGED;
    }
    if (!walk_block(ix, k, stored, len, &pl)) {
      free_points(pl.p, pl.n);
      free(pl.p);
      snprintf(reason, SI_REASON, "out of memory indexing block %u", k);
      return SI_DAMAGED;
    }
  }
  /* The history for the next block: the last HIST bytes of the stream so far. */
  memmove(ix->work, ix->work + b->size, HIST);

  /* Publish: append the block's points (the array grows under the lock: readers index it). */
  pthread_rwlock_wrlock(&ix->lock);
  int ok = 1;
  if (ix->npts + pl.n > ix->cap) {
    size_t cap = ix->cap ? ix->cap : 256;
    while (cap < ix->npts + pl.n) cap *= 2;
    point *q = realloc(ix->pts, cap * sizeof *q);
    if (q == NULL) ok = 0;
    else {
      ix->pts = q;
      ix->cap = cap;
    }
  }
  if (ok) {
    if (pl.n) memcpy(ix->pts + ix->npts, pl.p, pl.n * sizeof *pl.p);
    ix->npts += pl.n;
    ix->bytes += cost_of(pl.p, pl.n);
    atomic_store_explicit(&ix->indexed, k + 1, memory_order_release);
  }
  pthread_rwlock_unlock(&ix->lock);
  free(pl.p);
  if (!ok) {
    /* pl's windows were not appended. */
    snprintf(reason, SI_REASON, "out of memory indexing block %u", k);
    return SI_DAMAGED;
  }
  while (ix->bytes > ix->allowance) {
    int t = thin(ix);
    if (t <= 0) break; /* nothing left to merge (or no memory to): kept over the allowance */
  }
  if (k + 1 == ix->n) {
    free(ix->work); /* the pass is over */
    ix->work = NULL;
    ix->work_cap = 0;
  }
  return 0;
}

/* ---------- reads ---------- */

/* The last point of block k at or before pos, and the first point after i whose output starts
 * at or past end (or npts / another block). Under the lock; block k has points. */
static void span_points(const si_index *ix, uint32_t k, uint64_t pos, uint64_t end, size_t *i_out, size_t *j_out) {
  size_t lo = 0, hi = ix->npts - 1;
  while (lo < hi) {
    size_t mid = (lo + hi + 1) / 2;
    const point *p = &ix->pts[mid];
    if (p->block < k || (p->block == k && p->out <= pos)) lo = mid;
    else hi = mid - 1;
  }
  size_t j = lo + 1;
  while (j < ix->npts && ix->pts[j].block == k && ix->pts[j].out < end) j++;
  *i_out = lo;
  *j_out = j;
}

static int plan_locked(si_index *ix, uint64_t pos, size_t n, si_plan *plan, size_t *i_out, size_t *j_out) {
  int64_t kk = si_block_at(ix, pos);
  if (kk < 0 || n == 0) return SI_NOT_YET;
  uint32_t k = (uint32_t)kk;
  const si_block *b = &ix->blocks[k];
  if (b->raw || n > b->start + b->size - pos || k >= si_indexed(ix) || ix->npts == 0) return SI_NOT_YET;
  size_t i, j;
  span_points(ix, k, pos, pos + n, &i, &j);
  if (ix->pts[i].block != k) return SI_NOT_YET; /* cannot happen: every compressed block has a point at its start */
  plan->k = k;
  plan->pos = pos;
  plan->n = n;
  plan->ip = ix->pts[i].ip;
  plan->ip_end = j < ix->npts && ix->pts[j].block == k ? ix->pts[j].ip : b->stored;
  plan->generation = ix->generation;
  plan->out = ix->pts[i].out;
  plan->out_end = j < ix->npts && ix->pts[j].block == k ? ix->pts[j].out : b->start + b->size;
  *i_out = i;
  *j_out = j;
  return 0;
}

int si_plan_read(si_index *ix, uint64_t pos, size_t n, si_plan *plan) {
  size_t i, j;
  pthread_rwlock_rdlock(&ix->lock);
  int rc = plan_locked(ix, pos, n, plan, &i, &j);
  pthread_rwlock_unlock(&ix->lock);
  return rc;
}

/* Each thread's scratch, grown as needed; one larger than KEEP_SCRATCH is freed after the read,
 * so a thread keeps at most that between reads. Freed when the thread ends. */
typedef struct {
  uint8_t *p;
  size_t cap;
} scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok;

static void scratch_free(void *v) {
  scratch *s = v;
  if (s != NULL) free(s->p);
  free(s);
}

static void scratch_init(void) {
  scratch_key_ok = pthread_key_create(&scratch_key, scratch_free) == 0;
}

static uint8_t *scratch_get(size_t need) {
  pthread_once(&scratch_once, scratch_init);
  if (!scratch_key_ok) return NULL;
  scratch *s = pthread_getspecific(scratch_key);
  if (s == NULL) {
    s = calloc(1, sizeof *s);
    if (s == NULL || pthread_setspecific(scratch_key, s) != 0) {
      free(s);
      return NULL;
    }
  }
  if (s->cap < need) {
    free(s->p);
    s->p = malloc(need);
    s->cap = s->p ? need : 0;
  }
  return s->p;
}

static void scratch_trim(void) {
  if (!scratch_key_ok) return;
  scratch *s = pthread_getspecific(scratch_key);
  if (s != NULL && s->cap > KEEP_SCRATCH) {
    free(s->p);
    s->p = NULL;
    s->cap = 0;
  }
}

/* Decode plan's read from its stored bytes `in` into dst, writing the windows of the points it
 * passes into work (HIST + the span's output bytes, as planned). */
static int64_t decode_span(si_index *ix, const si_plan *plan, const uint8_t *in, uint8_t *dst, uint8_t *work, char reason[SI_REASON]) {
  pthread_rwlock_rdlock(&ix->lock);
  si_plan now;
  size_t i, j;
  if (plan->generation != ix->generation || plan_locked(ix, plan->pos, plan->n, &now, &i, &j) != 0 || now.k != plan->k ||
      now.ip != plan->ip || now.ip_end != plan->ip_end || now.out != plan->out || now.out_end != plan->out_end) {
    pthread_rwlock_unlock(&ix->lock);
    return SI_REPLAN;
  }
  /* Each point's window holds what the tokens up to the next one copy from before it. */
  int ok = 1;
  for (size_t m = i; m < j && ok; m++) ok = fill_window(&ix->pts[m], work, HIST + (size_t)(ix->pts[m].out - plan->out));
  pthread_rwlock_unlock(&ix->lock);
  if (!ok) {
    snprintf(reason, SI_REASON, "a seek point's window is unsound");
    return SI_DAMAGED;
  }
  size_t span = (size_t)(plan->out_end - plan->out);
  flz_result r;
  int64_t rc = flz_decode(in, plan->ip_end - plan->ip, 0, work, HIST, HIST + span, 0, plan->ip == 0, 0, 0, &r);
  if (rc < 0) {
    snprintf(reason, SI_REASON, "%s", rc == FLZ_DAMAGED ? r.reason : "a match reaches before the seek point's window");
    return SI_DAMAGED;
  }
  memcpy(dst, work + HIST + (plan->pos - plan->out), plan->n);
  return (int64_t)plan->n;
}

/* A plan as given (from JavaScript): within the index's numbers, else replanned. */
static int plan_sane(const si_index *ix, const si_plan *plan) {
  if (plan->k >= ix->n) return 0;
  const si_block *b = &ix->blocks[plan->k];
  return plan->ip <= plan->ip_end && plan->ip_end <= b->stored && plan->out >= b->start && plan->out <= plan->pos &&
         plan->out_end <= b->start + b->size && plan->n > 0 && plan->pos + plan->n <= plan->out_end;
}

int64_t si_decode(si_index *ix, const si_plan *plan, const uint8_t *stored, uint8_t *dst, char reason[SI_REASON]) {
  reason[0] = '\0';
  if (!plan_sane(ix, plan)) return SI_REPLAN;
  uint8_t *work = scratch_get(HIST + (size_t)(plan->out_end - plan->out));
  if (work == NULL) {
    snprintf(reason, SI_REASON, "out of memory");
    return SI_IO;
  }
  int64_t rc = decode_span(ix, plan, stored, dst, work, reason);
  scratch_trim();
  return rc;
}

int64_t si_read_with(si_index *ix, uint64_t pos, uint8_t *dst, size_t n, si_fetch fetch, void *ctx, char reason[SI_REASON]) {
  reason[0] = '\0';
  /* Points merge a handful of times over a whole pass: a few replans at most. */
  for (int attempt = 0; attempt < 64; attempt++) {
    si_plan plan;
    int rc = si_plan_read(ix, pos, n, &plan);
    if (rc != 0) return rc;
    const si_block *b = &ix->blocks[plan.k];
    size_t len = plan.ip_end - plan.ip;
    /* [the stored bytes | HIST | the span's output] */
    uint8_t *buf = scratch_get(len + HIST + (size_t)(plan.out_end - plan.out));
    if (buf == NULL) {
      snprintf(reason, SI_REASON, "out of memory");
      return SI_IO;
    }
    int64_t d = len > 0 ? fetch(ctx, plan.k, b->file_offset + plan.ip, len, buf, reason) : 0;
    if (d == 0) d = decode_span(ix, &plan, buf, dst, buf + len, reason);
    scratch_trim();
    if (d != SI_REPLAN) return d;
  }
  snprintf(reason, SI_REASON, "the seek index kept changing under the read");
  return SI_IO;
}

/* si_fetch over a descriptor (ctx points to it). */
static int fetch_fd(void *ctx, uint32_t k, uint64_t off, size_t len, uint8_t *dst, char reason[SI_REASON]) {
  int fd = *(const int *)ctx;
  for (size_t got = 0; got < len;) {
    ssize_t r = pread(fd, dst + got, len - got, (off_t)(off + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      snprintf(reason, SI_REASON, "reading block %u's stored bytes: %s", k, strerror(errno));
      return SI_IO;
    }
    if (r == 0) {
      snprintf(reason, SI_REASON, "block %u is cut short", k);
      return SI_IO;
    }
    got += (size_t)r;
  }
  return 0;
}

int64_t si_read_fd(si_index *ix, int fd, uint64_t pos, uint8_t *dst, size_t n, char reason[SI_REASON]) {
  return si_read_with(ix, pos, dst, n, fetch_fd, &fd, reason);
}
