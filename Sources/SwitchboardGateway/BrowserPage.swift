/// The browser call page the gateway serves, plain HTML and JavaScript with nothing fetched from elsewhere:
/// `html` at `GET /` and `GET /call`, `script` at `GET /call.js`, `worklet` at `GET /call-worklet.js`. It takes its
/// token from the URL fragment (`#token=...`, never sent to a server) or a pasted one, and speaks the browser
/// WebSocket protocol at `/browser/stream/{token}`. `agents/browser_call.py` drives it in a headless Chromium
/// through `window.switchboardCall`.
enum BrowserPage {
    /// The page, `text/html; charset=utf-8`.
    static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Switchboard call</title>
        <style>
          body { font: 16px/1.4 system-ui, sans-serif; max-width: 20rem; margin: 2rem auto; padding: 0 1rem; color: #1f2328; }
          h1 { font-size: 1.2rem; }
          input { display: block; width: 100%; box-sizing: border-box; font: inherit; padding: .4rem; margin: .2rem 0 1rem; }
          button { font: inherit; padding: .6rem; border: 1px solid #8c959f; border-radius: .4rem; background: #f6f8fa; cursor: pointer; }
          button:disabled { opacity: .4; cursor: default; }
          .row { display: grid; grid-template-columns: 1fr 1fr; gap: .5rem; }
          #call { background: #1a7f37; border-color: #1a7f37; color: #fff; }
          #hangup { background: #cf222e; border-color: #cf222e; color: #fff; }
          #status { min-height: 1.4em; overflow-wrap: anywhere; }
          .meters { display: grid; grid-template-columns: auto 1fr; gap: .3rem .6rem; align-items: center; margin-bottom: 1rem; }
          meter { width: 100%; }
          #keypad { display: grid; grid-template-columns: repeat(3, 1fr); gap: .5rem; }
        </style>
        </head>
        <body>
        <h1>Switchboard call</h1>
        <label id="token-field">Call token
          <input id="token" autocomplete="off" spellcheck="false" placeholder="paste a call token">
        </label>
        <div class="row">
          <button id="call" type="button">Call</button>
          <button id="hangup" type="button" disabled>Hang up</button>
        </div>
        <p id="status" role="status" aria-live="polite">idle</p>
        <div class="meters">
          <span>Mic</span><meter id="mic-level" min="0" max="1" value="0"></meter>
          <span>Agent</span><meter id="agent-level" min="0" max="1" value="0"></meter>
        </div>
        <div id="keypad">
          <button type="button" disabled>1</button><button type="button" disabled>2</button><button type="button" disabled>3</button>
          <button type="button" disabled>4</button><button type="button" disabled>5</button><button type="button" disabled>6</button>
          <button type="button" disabled>7</button><button type="button" disabled>8</button><button type="button" disabled>9</button>
          <button type="button" disabled>*</button><button type="button" disabled>0</button><button type="button" disabled>#</button>
        </div>
        <script src="/call.js"></script>
        </body>
        </html>
        """#

    /// The page's script, `text/javascript; charset=utf-8`: the call's state, the WebSocket, the meters and keypad.
    static let script = #"""
        // The call page: the microphone goes to the gateway as binary WebSocket frames (20 ms of 16-bit little-endian
        // PCM at 16 kHz each), the agent's frames come back the same way and are played; text frames are JSON events
        // (started, clear, ended, error from the gateway; dtmf and hangup to it). The audio work runs in
        // /call-worklet.js. `window.switchboardCall` exposes the state and start()/hangup() for tests.
        (() => {
          'use strict';
          const RATE = 16000;
          const KEEP = 3 * RATE; // received audio kept for receivedSamples(): the last 3 s

          const $ = (id) => document.getElementById(id);
          const keys = [...document.querySelectorAll('#keypad button')];

          // The token rides in the URL fragment, which browsers never send to servers; else it is pasted.
          const fragmentToken = new URLSearchParams(location.hash.slice(1)).get('token');
          if (fragmentToken) {
            $('token').value = fragmentToken;
            $('token-field').hidden = true;
          }

          const call = {
            state: 'idle', // 'idle' | 'connecting' | 'live' | 'ended' | 'error'
            callID: null,
            framesSent: 0,
            framesReceived: 0,
            events: [],    // every text event received, parsed
            start, hangup, dtmf, receivedSamples,
          };
          window.switchboardCall = call;

          // The current call's resources ({ctx, mic, ws, player, hangingUp, endTimer}), null between calls. Async steps
          // check that it is still theirs, since Hang up may come while they wait.
          let session = null;
          const ring = new Int16Array(KEEP); // the received audio, a ring buffer
          let ringWritten = 0;               // samples ever written to it

          function show(state, text) {
            call.state = state;
            $('status').textContent = text;
            const active = state === 'connecting' || state === 'live';
            $('call').disabled = active;
            $('hangup').disabled = !active;
            for (const key of keys) key.disabled = state !== 'live';
          }

          async function start() {
            if (session) return;
            const token = $('token').value.trim();
            if (!token) return show('idle', 'paste a call token first');
            if (!window.isSecureContext) return show('error', 'error: the microphone needs https (or localhost)');
            const s = session = { ctx: null, mic: null, ws: null, player: null, hangingUp: false, endTimer: null };
            Object.assign(call, { callID: null, framesSent: 0, framesReceived: 0, events: [] });
            ringWritten = 0;
            show('connecting', 'connecting…');
            try {
              // Made before the first await so that a click still counts as the user's gesture (autoplay policy).
              s.ctx = new AudioContext({ sampleRate: RATE });
              const mic = await navigator.mediaDevices.getUserMedia({
                audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: false },
              });
              if (session !== s) return mic.getTracks().forEach((t) => t.stop());
              s.mic = mic;
              await s.ctx.audioWorklet.addModule('/call-worklet.js');
              await s.ctx.resume();
              if (session !== s) return;

              // Down-mixed to one channel; connected to the output (which it leaves silent) so the audio thread runs it.
              const capture = new AudioWorkletNode(s.ctx, 'capture', { channelCount: 1, channelCountMode: 'explicit' });
              capture.port.onmessage = (e) => sendAudio(s, e.data);
              s.ctx.createMediaStreamSource(mic).connect(capture);
              capture.connect(s.ctx.destination);
              s.player = new AudioWorkletNode(s.ctx, 'player', { numberOfInputs: 0, outputChannelCount: [1] });
              s.player.connect(s.ctx.destination);

              // The WebSocket last: opening it places the call, and the agent may speak at once.
              const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
              s.ws = new WebSocket(`${scheme}://${location.host}/browser/stream/${encodeURIComponent(token)}`);
              s.ws.binaryType = 'arraybuffer';
              s.ws.onmessage = (e) => (typeof e.data === 'string' ? onEvent(s, e.data) : onAudio(s, e.data));
              s.ws.onclose = (e) => {
                const why = `connection closed (${e.code}${e.reason ? ': ' + e.reason : ''})`;
                if (call.state === 'live' || s.hangingUp) finish(s, 'ended', `ended: ${why}`);
                else finish(s, 'error', `error: ${why}`);
              };
            } catch (err) {
              finish(s, 'error', `error: ${err}`);
            }
          }

          function onEvent(s, text) {
            let event;
            try { event = JSON.parse(text); } catch { return; }
            call.events.push(event);
            switch (event.event) {
              case 'started':
                call.callID = event.call_id;
                show('live', `live: call ${event.call_id}`);
                break;
              case 'clear': // the agent was interrupted: what is queued for playback is stale
                s.player.port.postMessage('clear');
                $('status').textContent = `live: call ${call.callID} (agent interrupted)`;
                break;
              case 'ended':
                finish(s, 'ended', `ended: ${event.reason || 'call over'}`);
                break;
              case 'error':
                finish(s, 'error', `error: ${event.code}: ${event.message}`);
                break;
            }
          }

          function sendAudio(s, buffer) {
            $('mic-level').value = level(new Int16Array(buffer));
            if (session !== s || call.state !== 'live' || s.hangingUp || s.ws.readyState !== WebSocket.OPEN) return;
            // Over ~0.5 s waiting to go out: the connection is stalled; dropping keeps the call's delay from growing.
            if (s.ws.bufferedAmount > RATE) return;
            s.ws.send(buffer);
            call.framesSent++;
          }

          function onAudio(s, buffer) {
            if (session !== s) return;
            const view = new DataView(buffer);
            const frame = new Int16Array(buffer.byteLength >> 1);
            for (let i = 0; i < frame.length; i++) {
              frame[i] = view.getInt16(i * 2, true);
              ring[ringWritten++ % KEEP] = frame[i];
            }
            call.framesReceived++;
            $('agent-level').value = level(frame);
            s.player.port.postMessage(frame, [frame.buffer]);
          }

          function hangup() {
            const s = session;
            if (!s || s.hangingUp) return;
            if (!s.ws || s.ws.readyState !== WebSocket.OPEN) return finish(s, 'ended', 'ended: hung up');
            // The gateway answers with `ended` and closes; if it has not within 2 s, the page closes.
            s.hangingUp = true;
            s.ws.send(JSON.stringify({ event: 'hangup' }));
            $('status').textContent = 'hanging up…';
            s.endTimer = setTimeout(() => finish(s, 'ended', 'ended: hung up'), 2000);
          }

          function dtmf(digit) {
            if (session && call.state === 'live' && /^[0-9*#]$/.test(digit)) {
              session.ws.send(JSON.stringify({ event: 'dtmf', digit }));
            }
          }

          // Ends the call `s` (once): releases the microphone, the audio and the socket.
          function finish(s, state, text) {
            if (session !== s) return;
            session = null;
            clearTimeout(s.endTimer);
            if (s.mic) s.mic.getTracks().forEach((t) => t.stop());
            if (s.ctx) s.ctx.close().catch(() => {});
            if (s.ws && s.ws.readyState <= WebSocket.OPEN) s.ws.close(1000);
            $('mic-level').value = $('agent-level').value = 0;
            show(state, text);
          }

          // The last n received samples (at most 3 s), oldest first, as a plain array.
          function receivedSamples(n) {
            n = Math.max(0, Math.min(Math.floor(n), KEEP, ringWritten));
            const out = new Array(n);
            for (let i = 0; i < n; i++) out[i] = ring[(ringWritten - n + i) % KEEP];
            return out;
          }

          // A frame's loudness for the meters: RMS on a 60 dB scale, 0 (silent) to 1 (full scale).
          function level(frame) {
            let sum = 0;
            for (const x of frame) sum += x * x;
            const dbfs = 10 * Math.log10(sum / (frame.length * 32768 * 32768) + 1e-12);
            return Math.max(0, 1 + dbfs / 60);
          }

          $('call').onclick = start;
          $('hangup').onclick = hangup;
          for (const key of keys) key.onclick = () => dtmf(key.textContent);
          document.addEventListener('keydown', (e) => {
            if (e.target !== $('token') && /^[0-9*#]$/.test(e.key)) dtmf(e.key);
          });
          addEventListener('pagehide', hangup);
        })();
        """#

    /// The audio worklet, `text/javascript; charset=utf-8`: the processors `capture` (microphone to 20 ms PCM16
    /// frames) and `player` (a bounded queue of the agent's frames, silence when it runs dry, flushed by `clear`).
    static let worklet = #"""
        // Audio-thread half of the call page (see /call.js). The AudioContext runs at 16 kHz, the wire's rate, so
        // no resampling happens here.
        const FRAME = 320;           // 20 ms at 16 kHz
        const MAX_QUEUED = 16000;    // playback queue bound: 1 s; older audio is dropped beyond it
        const PREBUFFER = 3 * FRAME; // after running dry, wait for 60 ms before playing again (rides out jitter)

        // Microphone -> 20 ms frames of 16-bit little-endian PCM, each posted to the page as an ArrayBuffer.
        class CaptureProcessor extends AudioWorkletProcessor {
          constructor() {
            super();
            this.frame = new DataView(new ArrayBuffer(FRAME * 2));
            this.filled = 0;
          }

          process(inputs) {
            const samples = inputs[0][0]; // absent while the microphone delivers nothing
            if (samples) {
              for (let i = 0; i < samples.length; i++) {
                const s = Math.max(-1, Math.min(1, samples[i]));
                this.frame.setInt16(this.filled * 2, Math.round(s < 0 ? s * 0x8000 : s * 0x7fff), true);
                if (++this.filled === FRAME) {
                  this.port.postMessage(this.frame.buffer, [this.frame.buffer]); // transferred, not copied
                  this.frame = new DataView(new ArrayBuffer(FRAME * 2));
                  this.filled = 0;
                }
              }
            }
            return true;
          }
        }

        // The agent's audio: a queue of Int16Array frames from the page, played in order; silence when it runs dry.
        // The message 'clear' (the agent was interrupted) drops everything queued.
        class PlayerProcessor extends AudioWorkletProcessor {
          constructor() {
            super();
            this.queue = [];    // Int16Array frames
            this.offset = 0;    // samples of queue[0] already played
            this.queued = 0;    // samples in the queue not yet played
            this.playing = false;
            this.port.onmessage = (e) => {
              if (e.data === 'clear') {
                this.queue = [];
                this.offset = this.queued = 0;
                this.playing = false;
                return;
              }
              this.queue.push(e.data);
              this.queued += e.data.length;
              while (this.queued > MAX_QUEUED) {
                this.queued -= this.queue.shift().length - this.offset;
                this.offset = 0;
              }
            };
          }

          process(inputs, outputs) {
            const out = outputs[0][0];
            let i = 0;
            if (!this.playing && this.queued >= PREBUFFER) this.playing = true;
            while (this.playing && i < out.length && this.queue.length > 0) {
              const frame = this.queue[0];
              const n = Math.min(out.length - i, frame.length - this.offset);
              for (let k = 0; k < n; k++) out[i + k] = frame[this.offset + k] / 32768;
              i += n;
              this.offset += n;
              this.queued -= n;
              if (this.offset === frame.length) {
                this.queue.shift();
                this.offset = 0;
              }
            }
            if (i < out.length) {
              out.fill(0, i); // underflow: silence
              this.playing = false;
            }
            return true;
          }
        }

        registerProcessor('capture', CaptureProcessor);
        registerProcessor('player', PlayerProcessor);
        """#
}
