#include "baseline.h"
#include <nats/nats.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void on_request(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
    (void)sub; (void)closure;
    if (natsMsg_GetReply(msg) != NULL) {
        natsConnection_Publish(nc, natsMsg_GetReply(msg), natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
    }
    natsMsg_Destroy(msg);
}

static natsStatus connect_asap(natsConnection **nc, const char *url) {
    natsOptions *opts = NULL;
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK) s = natsOptions_SetURL(opts, url);
    if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, true);
    if (s == NATS_OK) s = natsConnection_Connect(nc, opts);
    natsOptions_Destroy(opts);
    return s;
}

int sb_baseline_nats_request(const char *url, const char *subject, int count, int payloadSize,
                             int64_t *out, char *error, int errorSize) {
    natsConnection *responder = NULL, *requester = NULL;
    natsSubscription *sub = NULL;
    natsMsg *reply = NULL;
    char *payload = calloc(1, payloadSize > 0 ? payloadSize : 1);
    int result = -1;
    natsStatus s = connect_asap(&responder, url);
    if (s == NATS_OK) s = natsConnection_Subscribe(&sub, responder, subject, on_request, NULL);
    if (s == NATS_OK) s = natsConnection_Flush(responder);
    if (s == NATS_OK) s = connect_asap(&requester, url);
    for (int i = 0; s == NATS_OK && i < count; i++) {
        int64_t start = now_ns();
        s = natsConnection_Request(&reply, requester, subject, payload, payloadSize, 2000);
        out[i] = now_ns() - start;
        natsMsg_Destroy(reply);
        reply = NULL;
    }
    if (s == NATS_OK) result = 0;
    else snprintf(error, errorSize, "nats.c: %s", natsStatus_GetText(s));
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(requester);
    natsConnection_Destroy(responder);
    free(payload);
    return result;
}

int sb_baseline_redis_set(const char *host, int port, const char *key, int count, int64_t *out,
                          char *error, int errorSize) {
    struct timeval timeout = { 2, 0 };
    redisContext *c = redisConnectWithTimeout(host, port, timeout);
    if (c == NULL || c->err) {
        snprintf(error, errorSize, "hiredis: %s", c ? c->errstr : "cannot allocate a context");
        if (c) redisFree(c);
        return -1;
    }
    const char *argv[3] = { "SET", key, "value" };
    size_t lens[3] = { 3, strlen(key), 5 };
    int result = 0;
    for (int i = 0; i < count; i++) {
        int64_t start = now_ns();
        redisReply *r = redisCommandArgv(c, 3, argv, lens);
        out[i] = now_ns() - start;
        if (r == NULL) {
            snprintf(error, errorSize, "hiredis: %s", c->errstr);
            result = -1;
            break;
        }
        freeReplyObject(r);
    }
    redisFree(c);
    return result;
}
