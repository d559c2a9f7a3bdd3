/*
 * encobj pages decrypted with EVP (see encobj.h). The EVP functions are not linked: they are
 * looked up in the process at first use (dlsym), so the addon loads in a Node that lacks them,
 * and decryption then stays in JavaScript. Their prototypes are OpenSSL 3's, declared here with
 * opaque types so that no OpenSSL header is needed.
 *
 * One cipher context per call: the key schedule is set up once, and each page only resets the
 * IV. A page wholly inside [from, from + n) is decrypted straight into dst; a cut one through a
 * buffer on the stack.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
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

/* Decrypt one page's 4064 bytes into out (the context has the key; the page brings its IV). */
static int page(EVP_CIPHER_CTX *c, const uint8_t *raw, uint8_t *out) {
  int a = 0, b = 0;
  return evp.init(c, NULL, NULL, NULL, raw + ENCOBJ_DATA) == 1 && evp.update(c, out, &a, raw, ENCOBJ_DATA) == 1 &&
         evp.final(c, out + a, &b) == 1 && a + b == ENCOBJ_DATA;
}

int encobj_decrypt(const uint8_t key[32], const uint8_t *raw, size_t pages, size_t from, size_t n, uint8_t *dst) {
  if (!encobj_available()) return -1;
  if (n == 0) return 0;
  EVP_CIPHER_CTX *c = evp.ctx_new();
  if (c == NULL) return -1;
  int ok = evp.init(c, evp.aes_256_cbc(), NULL, key, raw + ENCOBJ_DATA) == 1 && evp.set_padding(c, 0) == 1;
  const size_t end = from + n;
  for (size_t p = from / ENCOBJ_DATA; ok && p < pages && p * ENCOBJ_DATA < end; p++) {
    const size_t start = p * ENCOBJ_DATA;
    const size_t lo = from > start ? from - start : 0;                        /* within the page */
    const size_t hi = end < start + ENCOBJ_DATA ? end - start : ENCOBJ_DATA;
    const uint8_t *src = raw + p * ENCOBJ_PAGE;
    if (lo == 0 && hi == ENCOBJ_DATA) {
      ok = page(c, src, dst + (start - from));
    } else {
      uint8_t tmp[ENCOBJ_DATA];
      ok = page(c, src, tmp);
      if (ok) memcpy(dst + (start + lo - from), tmp + lo, hi - lo);
    }
  }
  evp.ctx_free(c);
  return ok ? 0 : -1;
}
