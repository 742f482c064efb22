// OpenSSL's libcrypto (libssl-dev): SHA-256 for API key hashes.
#include <openssl/sha.h>
#include <openssl/rand.h>
