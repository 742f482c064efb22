#ifndef SWITCHBOARD_CSPEEXDSP_SHIM_H
#define SWITCHBOARD_CSPEEXDSP_SHIM_H
/* libspeexdsp's resampler: the worker's bridge between callers' 48 kHz and agents' 8 kHz. */
#include <speex/speex_resampler.h>
#endif
