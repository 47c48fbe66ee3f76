// Shared by the pages: formatting as the server formats, and writing text only (never HTML).
"use strict";
var amr = {
  kw: function (v, digits) { return v === null || v === undefined ? "-" : Number(v).toFixed(digits); },
  text: function (v) {
    if (typeof v === "boolean") { return v ? "yes" : "no"; }
    return v === null || v === undefined ? "-" : String(v);
  },
  lastEdge: function (status) {
    var times = Object.values(status.last_edge || {}).filter(function (t) { return t; });
    times.sort();
    return times.length ? times[times.length - 1] : null;
  },
  // As pages.peak_since: the last reset (a billing read or a command), if any.
  peakSince: function (status) {
    if (status.peak_demand_since) { return status.peak_demand_since; }
    var times = (status.open_anomalies || []).filter(function (a) { return a.kind === "peak_reset"; })
      .map(function (a) { return a.time; });
    if (status.last_read) { times.push(status.last_read.end); }
    times.sort();
    return times.length ? times[times.length - 1] : null;
  },
  setText: function (root, attr, key, value) {
    var el = root.querySelector("[" + attr + "=\"" + key + "\"]");
    if (el && el.textContent !== value) { el.textContent = value; }
  },
  fill: function (card, status, live) {
    var set = function (k, v) { amr.setText(card, "data-k", k, v); };
    set("energy_wh", amr.text(status.energy_wh));
    set("lcd_kwh", amr.text(status.lcd_kwh));
    set("power_kw", amr.kw(status.power_kw, 3));
    set("demand_kw", amr.kw(status.demand_kw, 2));
    set("peak_demand_kw", amr.kw(status.peak_demand_kw, 2));
    set("peak_demand_end", amr.text(status.peak_demand_end));
    set("peak_since", amr.peakSince(status) || "counting began");
    set("edges", Object.keys(status.edges || {}).map(function (ch) { return ch + "=" + status.edges[ch]; }).join(" "));
    set("last_edge", amr.text(amr.lastEdge(status)));
    if (live && live.quality) { set("quality", live.quality); }
    var anomalies = status.open_anomalies || [];
    set("anomalies", String(anomalies.length));
    var list = card.querySelector("[data-k=\"anomaly_list\"]");
    if (list) {
      while (list.firstChild) { list.removeChild(list.firstChild); }
      anomalies.slice(-3).forEach(function (a) {
        var li = document.createElement("li");
        li.textContent = a.time + " " + a.kind + ": " + a.detail;
        list.appendChild(li);
      });
    }
  },
  cards: function () { return Array.prototype.slice.call(document.querySelectorAll("section.card")); },
  // A live stream of overviews; calls back with each. The browser reconnects by itself.
  stream: function (onOverview) {
    var live = document.getElementById("live");
    var source = new EventSource("/events");
    source.addEventListener("overview", function (event) {
      onOverview(JSON.parse(event.data));
      if (live) { live.textContent = "live"; live.className = "live on"; }
    });
    source.onerror = function () { if (live) { live.textContent = "reconnecting…"; live.className = "live off"; } };
    return source;
  }
};
