#ifndef SWITCHBOARD_COPUS_SHIM_H
#define SWITCHBOARD_COPUS_SHIM_H
#include <opus/opus.h>
#include <opus/opus_multistream.h>

/* opus_encoder_ctl is variadic and the OPUS_SET_* macros are not imported into Swift:
   one small wrapper per request we use. */
static inline int sb_opus_set_bitrate(OpusEncoder *e, opus_int32 v) { return opus_encoder_ctl(e, OPUS_SET_BITRATE(v)); }
static inline int sb_opus_set_complexity(OpusEncoder *e, opus_int32 v) { return opus_encoder_ctl(e, OPUS_SET_COMPLEXITY(v)); }
static inline int sb_opus_set_inband_fec(OpusEncoder *e, opus_int32 v) { return opus_encoder_ctl(e, OPUS_SET_INBAND_FEC(v)); }
static inline int sb_opus_set_packet_loss_perc(OpusEncoder *e, opus_int32 v) { return opus_encoder_ctl(e, OPUS_SET_PACKET_LOSS_PERC(v)); }
static inline int sb_opus_get_bitrate(OpusEncoder *e, opus_int32 *v) { return opus_encoder_ctl(e, OPUS_GET_BITRATE(v)); }
static inline int sb_opus_get_lookahead(OpusEncoder *e, opus_int32 *v) { return opus_encoder_ctl(e, OPUS_GET_LOOKAHEAD(v)); }

/* The same requests of a multistream encoder (channels coded as separate streams). */
static inline int sb_opus_ms_set_bitrate(OpusMSEncoder *e, opus_int32 v) { return opus_multistream_encoder_ctl(e, OPUS_SET_BITRATE(v)); }
static inline int sb_opus_ms_set_complexity(OpusMSEncoder *e, opus_int32 v) { return opus_multistream_encoder_ctl(e, OPUS_SET_COMPLEXITY(v)); }
static inline int sb_opus_ms_set_inband_fec(OpusMSEncoder *e, opus_int32 v) { return opus_multistream_encoder_ctl(e, OPUS_SET_INBAND_FEC(v)); }
static inline int sb_opus_ms_set_packet_loss_perc(OpusMSEncoder *e, opus_int32 v) { return opus_multistream_encoder_ctl(e, OPUS_SET_PACKET_LOSS_PERC(v)); }
static inline int sb_opus_ms_get_bitrate(OpusMSEncoder *e, opus_int32 *v) { return opus_multistream_encoder_ctl(e, OPUS_GET_BITRATE(v)); }
static inline int sb_opus_ms_get_lookahead(OpusMSEncoder *e, opus_int32 *v) { return opus_multistream_encoder_ctl(e, OPUS_GET_LOOKAHEAD(v)); }
#endif
