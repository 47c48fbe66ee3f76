// The gateway page: each Server-Sent Event carries the overview; cells are updated in place.
"use strict";
(function () {
  amr.stream(function (overview) {
    var known = {};
    amr.cards().forEach(function (card) {
      var name = card.dataset.meter;
      known[name] = true;
      var status = overview.meters[name];
      if (status) { amr.fill(card, status, (overview.live || {})[name]); }
    });
    var added = Object.keys(overview.meters).some(function (name) { return !known[name]; });
    if (added) { window.location.reload(); return; }  // a new meter: draw the page again
    var health = overview.gateway || {};
    Object.keys(health).forEach(function (key) {
      amr.setText(document, "data-h", key, amr.text(health[key]));
    });
  });
})();
