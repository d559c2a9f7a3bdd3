#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* benchread seq  FILE BLOCK                       OFF:LEN[,OFF:LEN...]  -> bytes seconds digest
 * benchread rand COUNT SEED BATCH FILE OFF:LEN[,...] [FILE OFF:LEN[,...]...] -> per file: reads seconds digest
 * seq: read() of BLOCK bytes through each range in order (the kernel's readahead applies).
 * rand: posix_fadvise(RANDOM) (no readahead), then one pread of 4 KiB at each of COUNT distinct
 * page offsets of the ranges, chosen by a seeded shuffle: every offset is touched once. With
 * several files, their reads are interleaved in batches of BATCH (the order reverses every batch:
 * ABBA...), so a machine whose load drifts slows every contender alike; their ranges must hold
 * the same number of pages (page i of one is page i of the others).
 * digest: FNV-style mix of two 64-bit words per 4 KiB read, to check contenders serve the same bytes. */

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static uint64_t mix(uint64_t d, const char *p) { uint64_t w; memcpy(&w, p, 8); return (d ^ w) * 0x100000001b3ull; }
static uint64_t rng;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static int parse_ranges(const char *spec, uint64_t *off, uint64_t *len) {
  int nr = 0;
  for (const char *p = spec; *p && nr < 16; ) {
    char *e; off[nr] = strtoull(p, &e, 10); if (*e != ':') return -1;
    len[nr] = strtoull(e + 1, &e, 10); nr++; p = *e == ',' ? e + 1 : e;
  }
  return nr;
}

static int seq(const char *file, size_t bs, const char *spec) {
  uint64_t off[16], len[16];
  int nr = parse_ranges(spec, off, len);
  if (nr < 0) return 2;
  int fd = open(file, O_RDONLY);
  if (fd < 0) { perror(file); return 1; }
  uint64_t digest = 0, total = 0;
  char *buf = aligned_alloc(4096, bs);
  double t0 = now();
  for (int r = 0; r < nr; r++) {
    if (lseek(fd, (off_t) off[r], SEEK_SET) < 0) { perror("lseek"); return 1; }
    uint64_t left = len[r];
    while (left > 0) {
      ssize_t n = read(fd, buf, left < bs ? left : bs);
      if (n <= 0) { fprintf(stderr, "read: %s\n", n < 0 ? strerror(errno) : "short"); return 1; }
      for (ssize_t i = 0; i + 4096 <= n; i += 4096) digest = mix(mix(digest, buf + i + 16), buf + i + 2048);
      left -= (uint64_t) n; total += (uint64_t) n;
    }
  }
  double t1 = now();
  printf("%llu %.6f %016llx\n", (unsigned long long) total, t1 - t0, (unsigned long long) digest);
  return 0;
}

static int rand_reads(int argc, char **argv) {
  uint64_t count = strtoull(argv[2], 0, 10), batch = strtoull(argv[4], 0, 10);
  rng = strtoull(argv[3], 0, 10) * 0x9E3779B97F4A7C15ull + 1;
  int nf = (argc - 5) / 2;
  if (nf < 1 || nf > 8 || batch == 0) { fprintf(stderr, "usage\n"); return 2; }
  int fd[8]; uint64_t off[8][16], len[8][16], digest[8] = {0}; int nr[8]; double secs[8] = {0};
  uint64_t pages = 0;
  for (int f = 0; f < nf; f++) {
    nr[f] = parse_ranges(argv[6 + 2 * f], off[f], len[f]);
    uint64_t p = 0;
    for (int r = 0; r < nr[f]; r++) p += len[f][r] / 4096;
    if (nr[f] < 0 || (f > 0 && p != pages)) { fprintf(stderr, "ranges differ\n"); return 2; }
    pages = p;
    fd[f] = open(argv[5 + 2 * f], O_RDONLY);
    if (fd[f] < 0) { perror(argv[5 + 2 * f]); return 1; }
    posix_fadvise(fd[f], 0, 0, POSIX_FADV_RANDOM);
  }
  if (count > pages) count = pages;
  uint32_t *perm = malloc(pages * sizeof *perm);
  for (uint64_t i = 0; i < pages; i++) perm[i] = (uint32_t) i;
  for (uint64_t i = 0; i < count; i++) {
    uint64_t j = i + next() % (pages - i);
    uint32_t t = perm[i]; perm[i] = perm[j]; perm[j] = t;
  }
  char *buf = aligned_alloc(4096, 4096);
  for (uint64_t b0 = 0, k = 0; b0 < count; b0 += batch, k++) {
    uint64_t b1 = b0 + batch < count ? b0 + batch : count;
    for (int step = 0; step < nf; step++) {
      int f = k % 2 ? nf - 1 - step : step;
      double t0 = now();
      for (uint64_t i = b0; i < b1; i++) {
        uint64_t pg = perm[i], at = 0;
        for (int r = 0; r < nr[f]; r++) {
          uint64_t rp = len[f][r] / 4096;
          if (pg < rp) { at = off[f][r] + pg * 4096; break; }
          pg -= rp;
        }
        ssize_t n = pread(fd[f], buf, 4096, (off_t) at);
        if (n != 4096) { fprintf(stderr, "%s: pread at %llu: %s\n", argv[5 + 2 * f], (unsigned long long) at, n < 0 ? strerror(errno) : "short"); return 1; }
        digest[f] = mix(mix(digest[f], buf + 16), buf + 2048);
      }
      secs[f] += now() - t0;
    }
  }
  for (int f = 0; f < nf; f++) printf("%llu %.6f %016llx\n", (unsigned long long) count, secs[f], (unsigned long long) digest[f]);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 5 && strcmp(argv[1], "seq") == 0) return seq(argv[2], strtoull(argv[3], 0, 10), argv[4]);
  if (argc >= 7 && strcmp(argv[1], "rand") == 0) return rand_reads(argc, argv);
  fprintf(stderr, "usage\n");
  return 2;
}
