/*
 * encobj pages decrypted with EVP (see encobj.h). The EVP functions are not linked: they are
 * looked up in the process at first use (dlsym), so the addon loads in a Node that lacks them,
 * and decryption then stays in JavaScript. Their prototypes are OpenSSL 3's, declared here with
 * opaque types so that no OpenSSL header is needed.
 *
 * One cipher context per call: the key schedule is set up once; pages are decrypted RUN at a
 * time into a buffer, then their plaintext copied out.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "encobj.h"

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;
typedef struct evp_cipher_st EVP_CIPHER;
typedef struct engine_st ENGINE;

static struct {
  EVP_CIPHER_CTX *(*ctx_new)(void);
  void (*ctx_free)(EVP_CIPHER_CTX *);
  const EVP_CIPHER *(*aes_256_cbc)(void);
  int (*init)(EVP_CIPHER_CTX *, const EVP_CIPHER *, ENGINE *, const unsigned char *, const unsigned char *);
  int (*set_padding)(EVP_CIPHER_CTX *, int);
  int (*update)(EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int);
  int (*final)(EVP_CIPHER_CTX *, unsigned char *, int *);
} evp;
static int evp_ok;

#define LOOK(field, name) (evp.field = (__typeof__(evp.field))dlsym(RTLD_DEFAULT, name))

static void look_up(void) {
  evp_ok = LOOK(ctx_new, "EVP_CIPHER_CTX_new") && LOOK(ctx_free, "EVP_CIPHER_CTX_free") && LOOK(aes_256_cbc, "EVP_aes_256_cbc") &&
           LOOK(init, "EVP_DecryptInit_ex") && LOOK(set_padding, "EVP_CIPHER_CTX_set_padding") && LOOK(update, "EVP_DecryptUpdate") &&
           LOOK(final, "EVP_DecryptFinal_ex");
}

int encobj_available(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, look_up);
  return evp_ok;
}

/* Pages decrypted per EVP call: one CBC pass over them as they lie in the file. */
#define RUN 16

/*
 * Decrypt pages [p0, p0 + k) of raw into buf (k * 4096 bytes, each page's 4064 plaintext bytes
 * first). One CBC pass over the pages as they lie decrypts every block right but each page's
 * first, which CBC XORs with the 16 bytes before it in the file (the previous page's MAC; for
 * the first of the run, the context's IV, zero) instead of the page's own IV: XORing both in
 * again corrects it. The IV and MAC blocks decrypt to bytes that are not used.
 */
static int run(EVP_CIPHER_CTX *c, const uint8_t *raw, size_t p0, size_t k, uint8_t *buf) {
  static const uint8_t zero[16];
  int a = 0;
  if (evp.init(c, NULL, NULL, NULL, zero) != 1 || evp.update(c, buf, &a, raw + p0 * ENCOBJ_PAGE, (int)(k * ENCOBJ_PAGE)) != 1 ||
      a != (int)(k * ENCOBJ_PAGE))
    return 0;
  for (size_t i = 0; i < k; i++) {
    const uint8_t *page = raw + (p0 + i) * ENCOBJ_PAGE;
    const uint8_t *before = i == 0 ? zero : page - 16;
    for (int j = 0; j < 16; j++) buf[i * ENCOBJ_PAGE + j] ^= before[j] ^ page[ENCOBJ_DATA + j];
  }
  return 1;
}

int encobj_decrypt(const uint8_t key[32], const uint8_t *raw, size_t pages, size_t from, size_t n, uint8_t *dst) {
  if (!encobj_available()) return -1;
  if (n == 0) return 0;
  EVP_CIPHER_CTX *c = evp.ctx_new();
  uint8_t *buf = malloc(RUN * ENCOBJ_PAGE);
  int ok = c != NULL && buf != NULL && evp.init(c, evp.aes_256_cbc(), NULL, key, NULL) == 1 && evp.set_padding(c, 0) == 1;
  const size_t end = from + n;
  const size_t last = (end - 1) / ENCOBJ_DATA < pages ? (end - 1) / ENCOBJ_DATA : pages - 1;
  for (size_t p0 = from / ENCOBJ_DATA; ok && p0 <= last; p0 += RUN) {
    const size_t k = last - p0 + 1 < RUN ? last - p0 + 1 : RUN;
    ok = run(c, raw, p0, k, buf);
    for (size_t i = 0; ok && i < k; i++) {
      const size_t start = (p0 + i) * ENCOBJ_DATA;
      const size_t lo = from > start ? from - start : 0; /* within the page */
      const size_t hi = end < start + ENCOBJ_DATA ? end - start : ENCOBJ_DATA;
      memcpy(dst + (start + lo - from), buf + i * ENCOBJ_PAGE + lo, hi - lo);
    }
  }
  free(buf);
  if (c != NULL) evp.ctx_free(c);
  return ok ? 0 : -1;
}
