/// The operator's list of calls, served by the router at `/ui/calls`: a search by tenant, time, end reason,
/// worker, version and state over `GET /v1/calls`, newest first, each call linking to its page. Plain HTML, CSS
/// and JavaScript; the key is taken as on the call page (`UIPage.script`) and the filters are kept in the address's query, so a search can be shared without the key.
enum CallsPage {
    static let html = UIPage.head("Calls", style: """
          h1 { margin-bottom: 12px; }
          form { display: flex; flex-wrap: wrap; gap: 8px 14px; align-items: end; margin-bottom: 14px; }
          label { display: flex; flex-direction: column; font-size: 12px; color: #475467; }
          input, select { font: inherit; padding: 3px 6px; }
        """) + """
        <body>
        <h1>Calls</h1>
        <form id="key-form" hidden><label>API key (admin, or a tenant's) <input id="key" type="password" autocomplete="off"></label>
          <button>Use</button></form>
        <form id="filters">
          <label>tenant <input name="tenant" size="12"></label>
          <label>since <input name="since" type="datetime-local" step="1"></label>
          <label>until <input name="until" type="datetime-local" step="1"></label>
          <label>end reason <input name="end_reason" size="12"></label>
          <label>worker <input name="worker" size="12"></label>
          <label>version <input name="version" size="10"></label>
          <label>state <select name="state"><option value="">any</option><option>placed</option><option>active</option><option>ended</option></select></label>
          <button>Search</button>
        </form>
        <div id="error"></div>
        <div id="summary" class="muted"></div>
        <table><thead><tr><th>placed (UTC)</th><th>call</th><th>tenant</th><th>state</th><th>worker</th><th>version</th><th>length</th><th>end</th></tr></thead>
          <tbody id="calls"></tbody></table>
        <p><button id="more" hidden>More</button></p>
        <script src="/ui/ui.js"></script>
        <script src="/ui/calls-page.js"></script>
        </body>
        </html>
        """

    static let script = #"""
        "use strict";
        (function () {
          const { $, api, onKeyGiven } = window.switchboardUI;
          const form = $("filters");
          const params = new URLSearchParams(location.search);
          // Times in the address are Unix ms; the inputs show them in UTC.
          const toInput = (ms) => new Date(Number(ms)).toISOString().slice(0, 19);
          const fromInput = (text) => String(Date.parse(text + "Z"));
          for (const [name, value] of params) {
            if (!form.elements[name]) continue;
            form.elements[name].value = (name === "since" || name === "until") ? toInput(value) : value;
          }
          let next = null;
          function query(cursor) {
            const q = new URLSearchParams();
            for (const el of form.elements) {
              if (!el.name || !el.value) continue;
              q.set(el.name, (el.name === "since" || el.name === "until") ? fromInput(el.value) : el.value);
            }
            return q;
          }
          form.addEventListener("submit", (e) => {
            e.preventDefault();
            history.replaceState(null, "", location.pathname + "?" + query().toString());
            $("calls").innerHTML = "";
            load(null);
          });
          onKeyGiven(() => load(null));
          $("more").addEventListener("click", () => load(next));
          const time = (ms) => ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "";
          async function load(cursor) {
            const q = query();
            if (cursor) q.set("cursor", cursor);
            const body = await api(`/v1/calls?${q}`);
            if (!body) { document.body.dataset.loaded = "error"; return; }
            for (const c of body.calls) {
              const r = c.record || {};
              const row = document.createElement("tr");
              row.dataset.call = c.call_id;
              const link = document.createElement("a");
              link.href = `/ui/calls/${encodeURIComponent(c.call_id)}`;
              link.textContent = c.call_id;
              const length = r.started_at && r.ended_at ? `${((r.ended_at - r.started_at) / 1000).toFixed(1)} s` : "";
              const cells = [time(c.placed_at_ms), link, c.tenant, c.record ? r.state : "record expired", r.worker_id || "",
                             r.version || "", length, r.end_reason || ""];
              for (const value of cells) {
                const cell = document.createElement("td");
                if (value instanceof Node) cell.appendChild(value); else cell.textContent = value;
                row.appendChild(cell);
              }
              $("calls").appendChild(row);
            }
            next = body.next;
            $("more").hidden = !next;
            $("summary").textContent = `${$("calls").children.length} calls` + (next ? " so far" : "");
            document.body.dataset.loaded = "true";
          }
          load(null);
        })();
        """#
}
