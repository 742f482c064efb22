#ifndef SWITCHBOARD_BENCH_BASELINE_H
#define SWITCHBOARD_BENCH_BASELINE_H
#include <stdint.h>

/* Plain C loops over nats.c and hiredis, with no Swift in the path: the yardstick the benchmark holds our
   wrappers against, measured in the same run. Each writes one round-trip time in nanoseconds per iteration
   into `out` and returns 0, or returns -1 and writes a reason into `error` (size `errorSize`). */

/* A responder on one connection answers every request on `subject`; a requester on another connection calls
   natsConnection_Request `count` times in a row. Both connections send as soon as possible. */
int sb_baseline_nats_request(const char *url, const char *subject, int count, int payloadSize,
                             int64_t *out, char *error, int errorSize);

/* `count` sequential commands (SET key value) on one blocking hiredis context. */
int sb_baseline_redis_set(const char *host, int port, const char *key, int count, int64_t *out,
                          char *error, int errorSize);
#endif
