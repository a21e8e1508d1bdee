// Live meter charts for /admin/meter: polls /admin/meter/data and redraws one row per entity.
// No libraries: the page must work offline (no CDN). Each row is a grid of three cells (the
// entity, its bar, its count), so labels and values never overlap the bars at any width; the
// bar is an SVG without text, stretched to its cell.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var SCALE = 1000;
  var chart = document.getElementById("meter-chart");
  var status = document.getElementById("meter-status");
  var alerts = document.getElementById("meter-alerts");

  function svg(name, attrs) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }

  function html(name, className, text) {
    var node = document.createElement(name);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function count(n) { return Number(n).toLocaleString("en"); }

  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }

  function row(r, top, threshold) {
    var over = r.upper > threshold;
    var li = html("li", over ? "over" : "");
    li.appendChild(html("span", "bar-label", r.entity));
    var bar = svg("svg", { "class": "bar", viewBox: "0 0 " + SCALE + " 16",
                           preserveAspectRatio: "none", "aria-hidden": "true", focusable: "false" });
    bar.appendChild(svg("rect", { "class": "bar-track", width: SCALE, height: 16 }));
    bar.appendChild(svg("rect", { "class": "tone-upper", width: r.upper * SCALE / top, height: 16 }));
    bar.appendChild(svg("rect", { "class": over ? "tone-bad" : "tone-info",
                                  width: r.lower * SCALE / top, height: 16 }));
    var x = threshold * SCALE / top;
    bar.appendChild(svg("line", { "class": "bar-threshold", x1: x, x2: x, y1: 0, y2: 16,
                                  "vector-effect": "non-scaling-stroke" }));
    li.appendChild(bar);
    var value = r.lower === r.upper ? count(r.lower) : count(r.lower) + "–" + count(r.upper);
    li.appendChild(html("span", "bar-value", value));
    return li;
  }

  function draw(data) {
    var threshold = data.threshold_posts;
    var top = Math.max(threshold, 1);
    data.entities.forEach(function (r) { top = Math.max(top, r.upper); });
    top = top * 1.05;
    clear(chart);
    data.entities.forEach(function (r) { chart.appendChild(row(r, top, threshold)); });
    if (!data.entities.length) {
      chart.appendChild(html("li", "empty", "Nothing metered yet."));
    }
    status.textContent = count(data.events) + " events metered; threshold " +
      count(threshold) + " posts in the window.";
    clear(alerts);
    data.alerts.slice().reverse().forEach(function (a) {
      var tr = document.createElement("tr");
      [[a.entity, ""], [a.level + "%", "num"], [a.at, "nowrap"], [count(a.lower), "num"],
       [count(a.upper), "num"], [a.confirmed ? "yes" : "not yet", ""]].forEach(function (cell) {
        tr.appendChild(html("td", cell[1], cell[0]));
      });
      alerts.appendChild(tr);
    });
    if (!data.alerts.length) {
      var tr = document.createElement("tr");
      var td = html("td", "muted", "No alerts yet.");
      td.setAttribute("colspan", "6");
      tr.appendChild(td);
      alerts.appendChild(tr);
    }
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
