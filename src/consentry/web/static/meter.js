// Live meter charts for /admin/meter: polls /admin/meter/data and redraws an SVG bar chart.
// No libraries: the page must work offline (no CDN).
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var chart = document.getElementById("meter-chart");
  var status = document.getElementById("meter-status");
  var alerts = document.getElementById("meter-alerts");

  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function draw(data) {
    while (chart.firstChild) { chart.removeChild(chart.firstChild); }
    var rows = data.entities;
    var top = Math.max(data.threshold_posts, 1);
    rows.forEach(function (r) { top = Math.max(top, r.upper); });
    top = top * 1.05;
    var x0 = 170, width = 520, rowH = 24;
    rows.forEach(function (r, i) {
      var y = i * rowH + 4;
      chart.appendChild(el("text", { x: 0, y: y + 15, "font-size": 12 }, r.entity.slice(0, 26)));
      chart.appendChild(el("rect", { x: x0, y: y + 3, height: 16, width: r.upper * width / top,
                                      fill: "#aecbfa" }));
      chart.appendChild(el("rect", { x: x0, y: y + 3, height: 16, width: r.lower * width / top,
                                      fill: r.upper > data.threshold_posts ? "#b3261e" : "#1a73e8" }));
    });
    var tx = x0 + data.threshold_posts * width / top;
    chart.appendChild(el("line", { x1: tx, x2: tx, y1: 0, y2: 300, stroke: "#b3261e",
                                   "stroke-dasharray": "4 3" }));
    status.textContent = data.events.toLocaleString() + " events metered; threshold " +
      data.threshold_posts.toLocaleString() + " posts.";
    while (alerts.firstChild) { alerts.removeChild(alerts.firstChild); }
    data.alerts.slice().reverse().forEach(function (a) {
      var tr = document.createElement("tr");
      [a.entity, a.level + "%", a.at, a.lower.toLocaleString(), a.upper.toLocaleString(),
       a.confirmed ? "yes" : "not yet"].forEach(function (v) {
        var td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
      });
      alerts.appendChild(tr);
    });
  }

  function poll() {
    fetch("/admin/meter/data", { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(draw)
      .catch(function () { status.textContent = "The meter did not answer; retrying."; });
  }
  poll();
  setInterval(poll, 2000);
}());
