/*
 * Decryption of encobj pages (VMware's encrypted data files: pages of 4096 bytes, each 4064
 * bytes of AES-256-CBC ciphertext, its 16-byte IV and a 16-byte MAC), with the OpenSSL inside
 * the Node binary that loaded the addon. Nothing here knows Node.
 */
#ifndef VMSSFS_ENCOBJ_H
#define VMSSFS_ENCOBJ_H

#include <stddef.h>
#include <stdint.h>

#define ENCOBJ_PAGE 4096
#define ENCOBJ_DATA 4064

/* Whether this process's Node exports the EVP functions used here (looked up once). */
int encobj_available(void);

/*
 * Decrypt the plaintext bytes [from, from + n) of the `pages` pages in raw (pages * 4096 bytes)
 * into dst (n bytes). The caller guarantees from + n <= pages * 4064. 0, or -1 when OpenSSL is
 * not there or failed.
 */
int encobj_decrypt(const uint8_t key[32], const uint8_t *raw, size_t pages, size_t from, size_t n, uint8_t *dst);

#endif
