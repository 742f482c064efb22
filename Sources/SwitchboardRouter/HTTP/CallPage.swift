/// The operator's page of one call, served by the router at `/ui/calls/{id}`: its timeline on one time axis
/// (each member's events, both sides' speech, each turn's latency, and with a recording both channels'
/// waveforms and a player: a click on an event plays from there, the playhead marks the current turn) and as
/// a table. Plain HTML, CSS and JavaScript with nothing fetched from elsewhere; it asks the router's API for the
/// timeline and the recording with the key the operator gives (kept in the tab's session storage, never sent
/// anywhere else; the audio is fetched with it and played from memory). See docs/api.md ("Call pages").
enum CallPage {
    static let html = UIPage.head("Call", style: """
          #summary span, #summary a { margin-right: 18px; }
          #key-form { margin: 16px 0; } #key-form input { width: 28em; }
          svg { background: #fff; border: 1px solid #e4e7ec; margin: 16px 0; width: 100%; }
          .lane { font-size: 12px; fill: #475467; } .tick { font-size: 11px; fill: #98a2b3; }
          .speech-caller { fill: #2e90fa; } .speech-agent { fill: #12b76a; } .turn { fill: #f79009; }
          .mark { fill: #475467; cursor: pointer; } .mark.sel, tr.sel { outline: 2px solid #7a5af8; }
          .mark.end { fill: #b42318; } .mark.move { fill: #7a5af8; }
          .wave { stroke-width: 1; fill: none; } .wave-caller { stroke: #2e90fa; } .wave-agent { stroke: #12b76a; } .playhead { stroke: #b42318; stroke-width: 1.5; }
          .turn.current { fill: #b42318; } #player { width: 100%; margin-top: 12px; } #recording { margin-top: 12px; }
          td { vertical-align: top; } tr { cursor: pointer; }
        """) + """
        <body>
        <h1>Call <code id="call-id"></code></h1>
        <div id="summary" class="muted">loading...</div>
        <form id="key-form" hidden><label>API key (admin, or the call's tenant): <input id="key" type="password" autocomplete="off"></label>
          <button>Show</button></form>
        <div id="error"></div>
        <div id="recording" class="muted"></div>
        <audio id="player" controls hidden></audio>
        <svg id="axis" height="10" role="img" aria-label="the call's timeline"></svg>
        <table><thead><tr><th>time</th><th>from</th><th>event</th><th>details</th></tr></thead><tbody id="events"></tbody></table>
        <script src="/ui/ui.js"></script>
        <script src="/ui/call-page.js"></script>
        </body>
        </html>
        """

    static let script = #"""
        "use strict";
        (function () {
          const { $, api, auth, onKeyGiven } = window.switchboardUI;
          const callID = decodeURIComponent(location.pathname.split("/").pop());
          $("call-id").textContent = callID;
          onKeyGiven(() => load());
          const svgNS = "http://www.w3.org/2000/svg";
          function el(name, attrs, text) {
            const node = document.createElementNS(svgNS, name);
            for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
            if (text !== undefined) node.textContent = text;
            return node;
          }
          function select(i) {
            document.querySelectorAll(".sel").forEach((n) => n.classList.remove("sel"));
            document.querySelectorAll(`[data-i="${i}"]`).forEach((n) => { n.classList.add("sel"); if (n.scrollIntoView && n.tagName === "TR") n.scrollIntoView({ block: "nearest" }); });
          }
          // The recording, when there is one: its info, its peaks and its audio (played from memory).
          let recording = null;
          async function loadRecording() {
            const base = `/v1/calls/${encodeURIComponent(callID)}/recording`;
            try {
              const info = await fetch(`${base}/info`, auth());
              if (!info.ok) { $("recording").textContent = info.status === 404 ? "no recording of this call" : `recording: ${info.status}`; return null; }
              const meta = await info.json();
              const [peaks, audio] = await Promise.all([fetch(`${base}/peaks`, auth()), fetch(base, auth())]);
              if (!peaks.ok || !audio.ok) { $("recording").textContent = `recording: ${peaks.status} / ${audio.status}`; return null; }
              const player = $("player");
              player.src = URL.createObjectURL(await audio.blob());
              player.hidden = false;
              $("recording").textContent = `recording: ${(meta.duration_ms / 1000).toFixed(1)} s, ${meta.bytes} bytes` +
                (meta.complete ? "" : " (still being recorded)") + (meta.capped ? ", stopped at its longest" : "") + "; the caller left, the agent right";
              return { meta, peaks: new Uint8Array(await peaks.arrayBuffer()) };
            } catch (error) { $("recording").textContent = `recording: ${error}`; return null; }
          }
          let traceLink = "";
          async function load() {
            traceLink = (await fetch("/ui/config.json").then((r) => r.json()).catch(() => ({}))).trace_link || "";
            const body = await api(`/v1/calls/${encodeURIComponent(callID)}/timeline`);
            if (!body) return;
            render(body);
            // Then the recording, drawn under the same axis once it is here (the timeline does not wait for it).
            recording = await loadRecording();
            if (recording) render(body);
            document.body.dataset.recording = recording ? "loaded" : "none";
          }
          function render(timeline) {
            const events = timeline.events;
            if (!events.length) { $("summary").textContent = "no events"; return; }
            let t0 = events[0].at_ms, t1 = events[events.length - 1].at_ms;
            const rec = recording && recording.meta;
            if (rec) { t0 = Math.min(t0, rec.started_at_ms); t1 = Math.max(t1, rec.started_at_ms + rec.duration_ms); }
            const span = Math.max(1, t1 - t0);
            const turns = events.filter((e) => e.type === "turn").map((e) => Number(e.attributes.latency_ms));
            const sorted = [...turns].sort((a, b) => a - b);
            const ended = events.find((e) => e.type === "ended");
            const placed = events.find((e) => e.type === "placed");
            $("summary").innerHTML = "";
            // The call's trace, linked where the router says traces are looked at.
            const traceID = placed && placed.attributes.trace_id;
            if (traceID) {
              const link = document.createElement(traceLink ? "a" : "span");
              link.id = "trace";
              link.textContent = `trace ${traceID}`;
              if (traceLink) link.href = traceLink.replace("{trace_id}", encodeURIComponent(traceID));
              $("summary").appendChild(link);
            }
            for (const text of [
              `${(span / 1000).toFixed(1)} s`,
              placed ? `tenant ${placed.attributes.tenant || "?"}` : "not placed",
              ended ? `ended: ${ended.attributes.reason || "?"}` : "no end yet",
              `${turns.length} turns` + (turns.length ? `, latency p50 ${sorted[Math.floor(sorted.length / 2)]} ms, max ${sorted[sorted.length - 1]} ms` : ""),
              `${events.length} events` + (timeline.dropped ? `, ${timeline.dropped} over the cap` : ""),
            ]) { const s = document.createElement("span"); s.textContent = text; $("summary").appendChild(s); }

            // Lanes: each member, and the two sides' speech.
            const members = [...new Set(events.map((e) => `${e.source} ${e.member}`))];
            const lanes = [...(rec ? ["caller audio", "agent audio"] : []), "caller speech", "agent speech", ...members];
            const svg = $("axis"), left = 170, right = 20, laneH = 24, top = 24;
            const width = Math.max(600, svg.clientWidth || 900);
            svg.setAttribute("viewBox", `0 0 ${width} ${top + lanes.length * laneH + 10}`);
            svg.setAttribute("height", top + lanes.length * laneH + 10);
            svg.innerHTML = "";
            const x = (t) => left + ((t - t0) / span) * (width - left - right);
            const y = (lane) => top + lanes.indexOf(lane) * laneH;
            lanes.forEach((lane) => svg.appendChild(el("text", { x: 6, y: y(lane) + 15, class: "lane" }, lane)));
            for (let i = 0; i <= 10; i++) {
              const t = t0 + (span * i) / 10;
              svg.appendChild(el("text", { x: x(t) - 10, y: 14, class: "tick" }, `${((t - t0) / 1000).toFixed(1)}s`));
            }
            // Both channels' waveforms: the loudest of the 20 ms peaks under each pixel.
            if (rec) {
              const frames = recording.peaks.length / 2, perPixel = Math.max(1, Math.ceil(frames / Math.max(1, x(rec.started_at_ms + frames * 20) - x(rec.started_at_ms))));
              ["caller", "agent"].forEach((channel, c) => {
                const mid = y(`${channel} audio`) + 12;
                let d = "";
                for (let f = 0; f < frames; f += perPixel) {
                  let peak = 0;
                  for (let g = f; g < Math.min(frames, f + perPixel); g++) peak = Math.max(peak, recording.peaks[2 * g + c]);
                  const h = Math.max(0.5, (peak / 255) * 11), px = x(rec.started_at_ms + f * 20);
                  d += `M${px.toFixed(1)} ${(mid - h).toFixed(1)}V${(mid + h).toFixed(1)}`;
                }
                svg.appendChild(el("path", { d, class: `wave wave-${channel}` }));
              });
            }
            // Speech bars, from each start to its stop.
            for (const channel of ["caller", "agent"]) {
              let start = null;
              for (const e of events.filter((e) => e.attributes.channel === channel)) {
                if (e.type === "speech_started") start = e.at_ms;
                if (e.type === "speech_stopped" && start !== null) {
                  svg.appendChild(el("rect", { x: x(start), y: y(`${channel} speech`) + 5, width: Math.max(1, x(e.at_ms) - x(start)), height: 14, class: `speech-${channel}` }));
                  start = null;
                }
              }
            }
            // Turns: from the caller's stop to the agent's answer, with the latency.
            events.forEach((e, i) => {
              if (e.type !== "turn") return;
              const from = Number(e.attributes.caller_stopped_at_ms), to = e.at_ms;
              const bar = el("rect", { x: x(from), y: y("agent speech") + 9, width: Math.max(2, x(to) - x(from)), height: 6, class: "turn", "data-i": i });
              bar.appendChild(el("title", {}, `turn ${e.attributes.number}: ${e.attributes.latency_ms} ms`));
              bar.addEventListener("click", () => { select(i); seek(from); });
              bar.dataset.from = from;
              bar.dataset.to = to;
              svg.appendChild(bar);
              svg.appendChild(el("text", { x: x(from), y: y("agent speech") + 4, class: "tick" }, `${e.attributes.latency_ms} ms`));
            });
            // Every other event as a mark on its member's lane.
            events.forEach((e, i) => {
              if (e.type.startsWith("speech_") || e.type === "turn") return;
              const kind = ["ended", "closed", "lost"].includes(e.type) ? "end" : ["migrating", "migrated", "taken_on", "resumed"].includes(e.type) ? "move" : "";
              const mark = el("circle", { cx: x(e.at_ms), cy: y(`${e.source} ${e.member}`) + 12, r: 5, class: `mark ${kind}`, "data-i": i });
              mark.appendChild(el("title", {}, `${e.type} ${JSON.stringify(e.attributes)}`));
              mark.addEventListener("click", () => { select(i); seek(e.at_ms); });
              svg.appendChild(mark);
            });
            // The player's place on the axis, and the turn it is in.
            const head = el("line", { x1: left, x2: left, y1: top - 4, y2: top + lanes.length * laneH, class: "playhead" });
            head.style.display = rec ? "" : "none";
            svg.appendChild(head);
            function seek(at) {
              if (!rec) return;
              const player = $("player");
              player.currentTime = Math.max(0, (at - rec.started_at_ms) / 1000);
              player.play().catch(() => {});
            }
            $("player").ontimeupdate = () => {
              if (!rec) return;
              const now = rec.started_at_ms + $("player").currentTime * 1000;
              head.setAttribute("x1", x(now));
              head.setAttribute("x2", x(now));
              document.querySelectorAll("rect.turn").forEach((bar) => {
                // The current turn: from the caller's stop to the next turn's (the agent's answer goes on after its start).
                bar.classList.toggle("current", Number(bar.dataset.from) <= now && !([...document.querySelectorAll("rect.turn")]
                  .some((other) => Number(other.dataset.from) > Number(bar.dataset.from) && Number(other.dataset.from) <= now)));
              });
            };
            // The table.
            const tbody = $("events");
            tbody.innerHTML = "";
            events.forEach((e, i) => {
              const row = document.createElement("tr");
              row.dataset.i = i;
              row.dataset.type = e.type;
              for (const text of [`${((e.at_ms - t0) / 1000).toFixed(3)} s`, `${e.source} ${e.member}`, e.type,
                                  Object.entries(e.attributes).map(([k, v]) => `${k}=${v}`).join("  ")]) {
                const cell = document.createElement("td");
                cell.textContent = text;
                row.appendChild(cell);
              }
              row.addEventListener("click", () => { select(i); seek(e.at_ms); });
              tbody.appendChild(row);
            });
            document.body.dataset.loaded = "true";
          }
          load();
        })();
        """#
}

/// What the router's pages share: the head, and the look of their text and tables (each adds its own style).
enum UIPage {
    /// What the operator's pages share: the API key (from the address's `#key=` fragment, which no server sees,
    /// or typed into the page's key form; kept in the tab's session storage, taken out of the address) and the
    /// API's JSON fetched with it, its errors shown in `#error` (the key form again after 401 or 403).
    static let script = #"""
        "use strict";
        window.switchboardUI = (function () {
          const $ = (id) => document.getElementById(id);
          const stored = "switchboard-key";
          const fromHash = new URLSearchParams(location.hash.slice(1)).get("key");
          if (fromHash) { sessionStorage.setItem(stored, fromHash); history.replaceState(null, "", location.pathname + location.search); }
          // `load` runs again once a key is typed in.
          function onKeyGiven(load) {
            $("key-form").addEventListener("submit", (e) => { e.preventDefault(); sessionStorage.setItem(stored, $("key").value); load(); });
          }
          const auth = () => ({ headers: { Authorization: `Bearer ${sessionStorage.getItem(stored)}` } });
          // GET `path` with the key: its JSON, or null once what went wrong is shown.
          async function api(path) {
            if (!sessionStorage.getItem(stored)) { $("key-form").hidden = false; $("summary").textContent = "an API key is needed"; return null; }
            $("key-form").hidden = true;
            $("error").textContent = "";
            let response;
            try {
              response = await fetch(path, auth());
            } catch (error) { $("error").textContent = `the router could not be reached: ${error}`; return null; }
            const body = await response.json().catch(() => ({}));
            if (!response.ok) {
              $("error").textContent = `${response.status} ${(body.error && body.error.code) || ""}: ${(body.error && body.error.message) || ""}`;
              if (response.status === 401 || response.status === 403) { sessionStorage.removeItem(stored); $("key-form").hidden = false; }
              return null;
            }
            return body;
          }
          return { $, api, auth, onKeyGiven };
        })();
        """#

    static func head(_ title: String, style: String) -> String {
        """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(title) - Switchboard</title>
        <style>
          body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2330; background: #fafbfc; }
          h1 { font-size: 18px; margin: 0 0 4px; } .muted { color: #667085; } #error { color: #b42318; }
          table { border-collapse: collapse; width: 100%; background: #fff; }
          td, th { border-bottom: 1px solid #eaecf0; padding: 4px 8px; text-align: left; font-size: 13px; }
          code { font-size: 12px; }
        \(style)
        </style>
        </head>

        """
    }
}
