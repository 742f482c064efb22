"""A Pipecat bot written as for Twilio Media Streams (FastAPI WebSocket transport + TwilioFrameSerializer), that
echoes what the caller says: no API keys, no network. Switchboard runs it unchanged, one process per call
(`--agent-command '… --port {port}'`) or as one server for many calls (`--agent-url ws://…/ws`).

It also shows Switchboard's checkpoint extension (SaveState below): the bot's state is saved with each call,
and a call that moves to another worker resumes with it.
"""

import argparse
import json
import os
import time

import uvicorn
from fastapi import FastAPI, WebSocket
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame, OutputTransportMessageUrgentFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner


class Echo(FrameProcessor):
    """Sends the caller's audio back as the bot's."""

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            frame = OutputAudioRawFrame(
                audio=frame.audio, sample_rate=frame.sample_rate, num_channels=frame.num_channels
            )
        await self.push_frame(frame, direction)


class SaveState(FrameProcessor):
    """Saves the bot's state with Switchboard's `checkpoint` event about once a second, and starts from the
    saved state when the call resumed on another worker (`customParameters`: `resumed`, `state`)."""

    def __init__(self, call_body: dict):
        super().__init__()
        saved = json.loads(call_body.get("state") or "{}")
        self.state = {"echoed": saved.get("echoed", 0), "resumed": call_body.get("resumed") == "true"}
        self.saved_at = 0.0

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputAudioRawFrame):
            self.state["echoed"] += 1
            if time.monotonic() - self.saved_at >= 1:
                self.saved_at = time.monotonic()
                # TwilioFrameSerializer sends a transport message's dict as it is: the checkpoint event.
                checkpoint = {"event": "checkpoint", "state": dict(self.state)}  # a copy: counting goes on
                await self.push_frame(OutputTransportMessageUrgentFrame(message=checkpoint))
        await self.push_frame(frame, direction)


app = FastAPI()


@app.websocket("/ws")
async def media_stream(websocket: WebSocket):
    await websocket.accept()
    _, call_data = await parse_telephony_websocket(websocket)
    serializer = TwilioFrameSerializer(
        stream_sid=call_data["stream_id"],
        call_sid=call_data["call_id"],
        # No Twilio account behind Switchboard: hanging up is closing the socket, which the transport does.
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True, serializer=serializer),
    )
    pipeline = Pipeline([transport.input(), Echo(), SaveState(call_data["body"]), transport.output()])
    worker = PipelineWorker(
        pipeline,
        # 8 kHz end to end, as Pipecat's Twilio example keeps it.
        params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000),
        # Pipecat's idle detector counts speech frames (TTS, transcripts), which an echo never makes: left on,
        # it would hang up every call after 5 minutes. The call ends when Switchboard closes the socket.
        idle_timeout_secs=None,
    )

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A Pipecat echo bot for Twilio Media Streams")
    parser.add_argument("--host", default="127.0.0.1")
    port = os.environ.get("SWITCHBOARD_AGENT_PORT") or os.environ.get("PORT") or 8765
    parser.add_argument("--port", type=int, default=int(port))
    parser.add_argument("--one-call", action="store_true", help="ignored: the worker ends the process with its call")
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
