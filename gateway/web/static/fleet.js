// The fleet page: each Server-Sent Event carries the fleet's overview; cells are updated in
// place. A gateway or meter that came, went or changed place in the order redraws the page.
"use strict";
(function () {
  function rows(selector, key) {
    return Array.prototype.slice.call(document.querySelectorAll(selector + " tbody tr"))
      .map(function (row) { return { row: row, key: row.dataset[key] }; });
  }
  function same(a, b) {
    return a.length === b.length && a.every(function (x, i) { return x === b[i]; });
  }
  amr.stream(function (overview) {
    var meters = rows("#fleet-meters", "meter"), gateways = rows("#gateways", "gateway");
    var keys = function (list) { return list.map(function (r) { return r.key; }); };
    if (!same(keys(meters), overview.order) || !same(keys(gateways), Object.keys(overview.gateways))) {
      window.location.reload();
      return;
    }
    meters.forEach(function (r) {
      var m = overview.meters[r.key];
      var set = function (k, v) { amr.setText(r.row, "data-k", k, v); };
      set("model", amr.text(m.model));
      set("energy_wh", amr.text(m.energy_wh));
      set("power_kw", amr.kw(m.power_kw, 3));
      set("last_interval_end", amr.text(m.last_interval_end));
      set("silent_since", amr.text(m.silent_since));
      set("open_gaps", String(m.open_gaps.length));
      set("anomalies", String(m.anomalies));
      set("period_energy_wh", amr.text(m.current_period.energy_wh));
      set("period_since", m.current_period.since || "counting began");
      set("peak_demand_kw", amr.kw(m.peak_demand_kw, 2));
      r.row.classList.toggle("attention", Boolean(m.attention));
    });
    gateways.forEach(function (r) {
      var g = overview.gateways[r.key];
      var set = function (k, v) { amr.setText(r.row, "data-g", k, v); };
      set("status", g.status || "unknown");
      set("since", amr.text(g.since));
      set("meters", String(g.meters));
      set("attention", String(g.attention));
      set("period", amr.text(g.bill.period));
      set("bill_energy_wh", amr.text(g.bill.energy_wh));
      r.row.className = "gw-" + (g.status || "unknown");
    });
    var health = overview.gateway || {};
    Object.keys(health).forEach(function (key) {
      amr.setText(document, "data-h", key, amr.text(health[key]));
    });
  });
})();
