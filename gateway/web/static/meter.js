// The meter page: today's intervals as an SVG bar chart of demand, and the card kept live.
"use strict";
(function () {
  var SVG = "http://www.w3.org/2000/svg";
  var name = document.body.dataset.meter;

  function node(tag, attrs, parent) {
    var el = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) { el.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(el); }
    return el;
  }

  function draw(data) {
    var figure = document.getElementById("chart");
    while (figure.firstChild) { figure.removeChild(figure.firstChild); }
    var rows = data.intervals;
    // Drawn at the figure's own width, so labels stay readable on a phone.
    var w = Math.max(300, Math.round(figure.clientWidth || 960)), h = Math.round(Math.min(260, w * 0.5));
    var left = 40, bottom = 22, top = 10;
    var step = w < 600 ? 6 : 3;
    var svg = node("svg", { viewBox: "0 0 " + w + " " + h, role: "img", "aria-label": "demand per interval" }, figure);
    var max = rows.reduce(function (m, r) { return Math.max(m, r.demand_kw); }, 0) || 1;
    var day = Date.parse(data.today + "T00:00:00Z");
    var x = function (t) { return left + (w - left - 4) * (Date.parse(t) - day) / 86400000; };
    var y = function (v) { return h - bottom - (h - bottom - top) * v / max; };
    for (var i = 0; i <= 4; i++) {
      var v = max * i / 4;
      node("line", { x1: left, x2: w - 4, y1: y(v), y2: y(v), "class": "grid" }, svg);
      node("text", { x: left - 4, y: y(v) + 4, "class": "axis", "text-anchor": "end" }, svg).textContent = v.toFixed(1);
    }
    for (var hour = 0; hour <= 24; hour += step) {
      var t = new Date(day + hour * 3600000).toISOString();
      var anchor = hour === 0 ? "start" : hour === 24 ? "end" : "middle";
      node("text", { x: x(t), y: h - 6, "class": "axis", "text-anchor": anchor }, svg).textContent = String(hour).padStart(2, "0") + ":00";
    }
    rows.forEach(function (r) {
      var x0 = x(r.start), x1 = x(r.end);
      var bar = node("rect", { x: x0, y: y(r.demand_kw), width: Math.max(1, x1 - x0 - 1),
        height: Math.max(0, y(0) - y(r.demand_kw)), "class": "bar q-" + r.quality }, svg);
      node("title", {}, bar).textContent = r.start + ": " + r.energy_wh + " Wh, " + r.demand_kw.toFixed(2) + " kW, " + r.quality;
    });
    node("text", { x: 2, y: top + 4, "class": "axis" }, svg).textContent = "kW";
    var note = document.getElementById("chart-note");
    if (note) { note.textContent = rows.length + " intervals"; }
    figure.dataset.drawn = String(rows.length);
  }

  function load() {
    return fetch("/api/meters/" + encodeURIComponent(name), { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        draw(data);
        var running = document.getElementById("running");
        if (running) { running.textContent = String(data.current_period.energy_wh); }
      });
  }

  var lastCommit = null;
  load();
  amr.stream(function (overview) {
    var status = overview.meters[name];
    var card = amr.cards()[0];
    if (status && card) { amr.fill(card, status, (overview.live || {})[name]); }
    var commit = (overview.gateway || {}).last_commit;
    if (commit !== lastCommit) { lastCommit = commit; load(); }  // the database changed
  });
})();
