/*
 * FastLZ level 2, the codec of VMware's compressed memory blocks (grammar: docs/format.md). The
 * same contract as the JavaScript decoder, fastLzDecode in src/io/fastlz.ts, which tests and the
 * fuzzer hold this one to byte for byte and failure for failure. Nothing here knows Node.
 */
#ifndef VMSSFS_FASTLZ_H
#define VMSSFS_FASTLZ_H

#include <stddef.h>
#include <stdint.h>

/* A match reached before history_start: nothing else is wrong yet, give it more history. */
#define FLZ_NEEDS_HISTORY (-1)
/* The stream is damaged; flz_result.reason says how, in the JavaScript decoder's words. */
#define FLZ_DAMAGED (-2)

/* Farthest a match can reach back: the escaped distance 8192 + 0xffff. */
#define FLZ_MAX_DISTANCE (8192 + 0xffff)

typedef struct {
  size_t ip;          /* the next token's offset in the input (where decoding can resume) */
  size_t op;          /* the output position reached */
  char reason[96];    /* FLZ_DAMAGED: why */
} flz_result;

/*
 * Decode tokens from in[ip0..in_len) into out[out_start, out_end); out[history_start,
 * out_start) holds valid history (the caller prefills zeros before the stream's start: VMware's
 * window is zeroed there). at_block_start: in[ip0] is the block's first control byte, which
 * carries the level-2 mark. The caller guarantees history_start <= out_start <= out_end and that
 * out has out_end bytes; everything read from `in` is checked here.
 *
 * Without a stop (has_stop 0) the tokens must produce exactly out_end - out_start bytes. With
 * one, decoding ends after the first token that reaches stop_at, or where the input ends (the
 * caller checks the output reached); r->ip and r->op say where: a token boundary, a seek point.
 * Returns the bytes produced, FLZ_NEEDS_HISTORY or FLZ_DAMAGED. Bytes of out[op, out_end) may
 * have been written on any return: they belong to the block being decoded.
 * Each step consumes input, so time is bounded by the input and output sizes.
 */
int64_t flz_decode(const uint8_t *in, size_t in_len, size_t ip0, uint8_t *out, size_t out_start, size_t out_end,
                   size_t history_start, int at_block_start, int has_stop, size_t stop_at, flz_result *r);

#endif
