#ifndef SWITCHBOARD_CNATS_SHIM_H
#define SWITCHBOARD_CNATS_SHIM_H
#include <nats/nats.h>
#endif
