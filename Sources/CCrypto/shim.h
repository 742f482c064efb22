// OpenSSL's libcrypto (libssl-dev): SHA-256 for API key hashes; Ed25519 and SHA-512/256 for NATS NKeys and JWTs.
#include <openssl/sha.h>
#include <openssl/rand.h>
#include <openssl/evp.h>
