/*
 * FastLZ level-2 decoder (see fastlz.h for the contract, docs/format.md for the grammar).
 *
 * Per control byte C: C < 32 is a literal run of C + 1 bytes; else a match of length (C >> 5) + 2
 * (7 in the length field adds the following bytes while they are 255, and the first that is not),
 * at distance ((C & 31) << 8 | D) + 1 for the next byte D, except C & 31 = 31 with D = 255:
 * distance 8192 + the next two bytes, big-endian. Every length, distance and index is checked
 * against the input, the output and the history before it is used.
 *
 * Speed comes from copying in words: a literal run (at most 32 bytes) and a short match are
 * copied with fixed-size memcpy, which compilers turn into a few vector moves, whenever the
 * output has room for the whole word; the bytes written past the token's end then lie inside the
 * block's own output and are overwritten by the tokens that follow.
 */
#include <stdio.h>
#include <string.h>

#include "fastlz.h"

static int64_t damaged(flz_result *r, size_t ip, size_t op, const char *fmt, size_t a, size_t b) {
  r->ip = ip;
  r->op = op;
  snprintf(r->reason, sizeof r->reason, fmt, a, b);
  return FLZ_DAMAGED;
}

/* Copy a match of len bytes from dist bytes back; out[op, op + len) lies within out[.., end). */
static inline void copy_match(uint8_t *out, size_t op, size_t len, size_t dist, size_t end) {
  uint8_t *d = out + op;
  const uint8_t *s = d - dist;
  if (dist >= 16 && len <= 16 && end - op >= 16) {
    memcpy(d, s, 16); /* the source ends before d: no overlap */
  } else if (dist >= len) {
    memcpy(d, s, len);
  } else if (dist == 1) {
    memset(d, *s, len);
  } else if (dist >= 8) {
    /* Overlapping, but each word is read from bytes written before it: words of 8 are safe. */
    size_t i = 0;
    for (; i + 8 <= len; i += 8) memcpy(d + i, s + i, 8);
    if (i < len) {
      if (end - op - i >= 8) memcpy(d + i, s + i, 8);
      else for (; i < len; i++) d[i] = s[i];
    }
  } else {
    /* A pattern of dist < 8 bytes repeats: copy it in growing, non-overlapping steps. */
    size_t done = 0, span = dist;
    while (done < len) {
      size_t n = span < len - done ? span : len - done;
      memcpy(d + done, s, n);
      done += n;
      span += n;
    }
  }
}

int64_t flz_decode(const uint8_t *in, size_t in_len, size_t ip0, uint8_t *out, size_t out_start, size_t out_end,
                   size_t history_start, int at_block_start, int has_stop, size_t stop_at, flz_result *r) {
  const size_t size = out_end - out_start;
  const size_t limit = has_stop ? stop_at : SIZE_MAX;
  size_t ip = ip0;
  size_t op = out_start;
  r->reason[0] = '\0';
  if (ip0 >= in_len) return damaged(r, ip, op, at_block_start ? "empty block" : "no tokens to decode", 0, 0);
  size_t ctrl = in[ip++];
  if (at_block_start) {
    if (ctrl >> 5 > 1) return damaged(r, ip, op, "first control byte 0x%zx is not a level-2 literal run", ctrl, 0);
    ctrl &= 31;
  }
  for (;;) {
    if (ctrl < 32) {
      const size_t run = ctrl + 1;
      if (run > in_len - ip) return damaged(r, ip, op, "literal run of %zu bytes runs past the block's end", run, 0);
      if (run > out_end - op) return damaged(r, ip, op, "literal run overruns the block's %zu bytes", size, 0);
      if (in_len - ip >= 32 && out_end - op >= 32) {
        memcpy(out + op, in + ip, 16);
        if (run > 16) memcpy(out + op + 16, in + ip + 16, 16);
      } else {
        memcpy(out + op, in + ip, run);
      }
      ip += run;
      op += run;
    } else {
      size_t len = (ctrl >> 5) + 2;
      if (len == 9) {
        /* Each 255 consumes a byte of input: len stays below 9 + 255 * in_len, no overflow. */
        size_t b;
        do {
          if (ip >= in_len) return damaged(r, ip, op, "match length runs past the block's end", 0, 0);
          b = in[ip++];
          len += b;
        } while (b == 255);
      }
      if (ip >= in_len) return damaged(r, ip, op, "match distance runs past the block's end", 0, 0);
      const size_t lo = in[ip++];
      size_t dist;
      if ((ctrl & 31) == 31 && lo == 255) {
        if (in_len - ip < 2) return damaged(r, ip, op, "far match distance runs past the block's end", 0, 0);
        dist = 8192 + ((size_t)in[ip] << 8 | in[ip + 1]);
        ip += 2;
      } else {
        dist = ((ctrl & 31) << 8 | lo) + 1;
      }
      if (dist > op - history_start) {
        r->ip = ip;
        r->op = op;
        return FLZ_NEEDS_HISTORY;
      }
      if (len > out_end - op) return damaged(r, ip, op, "match overruns the block's %zu bytes", size, 0);
      copy_match(out, op, len, dist, out_end);
      op += len;
    }
    if (ip >= in_len || op >= limit) break;
    ctrl = in[ip++];
  }
  r->ip = ip;
  r->op = op;
  if (!has_stop && op != out_end) return damaged(r, ip, op, "block decoded to %zu bytes, its header says %zu", op - out_start, size);
  return (int64_t)(op - out_start);
}
