// strata status page: re-render <main> from GET /status, one request at a time and at most
// once a second. Builds the same markup as src/observe/page.rs; every text is escaped.
(function () {
  "use strict";
  var PERIOD_MS = 1000;
  var HEAD = ["layer / release", "phase", "action", "helm revision", "attempts", "transient retries", "started (UTC)", "ready (UTC)", "message"];
  var main = document.getElementById("status");
  var note = document.getElementById("refresh");
  var ENTITIES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function esc(v) {
    return v === undefined || v === null ? "" : String(v).replace(/[&<>"']/g, function (c) { return ENTITIES[c]; });
  }
  function badge(phase, cls) {
    var p = esc(phase);
    return '<span class="phase ' + cls + " p-" + p + '">' + p + "</span>";
  }
  function applied(r) {
    return "<code>" + esc(r.commit) + "</code> (fetched at " + esc(r.fetchedAt) + ")";
  }
  function time(t) {
    if (!t) { return ""; }
    var m = /T([^.Z]*)[^Z]*Z$/.exec(t);
    var full = esc(t);
    return '<time datetime="' + full + '" title="' + full + '">' + esc(m ? m[1] : t) + "</time>";
  }
  function took(from, to) {
    var a = Date.parse(from), b = Date.parse(to);
    if (isNaN(a) || isNaN(b) || b < a) { return ""; }
    return "took " + ((b - a) / 1000).toFixed(1) + "s";
  }
  function problem(p) {
    return p.field ? p.file + ": " + p.field + ": " + p.message : p.file + ": " + p.message;
  }
  function action(cls, a) {
    return a ? '<li class="' + cls + '">last ' + cls + ": " + esc(a.kind) + " at " + esc(a.at) + ": " + esc(a.message) + "</li>" : "";
  }
  function release(r) {
    var ns = esc(r.namespace), name = esc(r.name);
    var h = '<tr class="release" data-release="' + ns + "/" + name + '"><td>' + name + " <small>" + ns + " \u00b7 " +
      esc(r.chart) + " " + esc(r.version) + "</small></td><td>" + badge(r.phase, "release-phase") + "</td><td>" +
      esc(r.action) + '</td><td class="num">' + esc(r.helmRevision) + '</td><td class="num">' + esc(r.attempts) +
      '</td><td class="num">' + esc(r.transientRetries || 0) + "</td><td>" + time(r.startedAt) + "</td><td>" +
      time(r.readyAt) + '</td><td class="message">' + esc(r.message) + "</td></tr>";
    var items = "";
    (r.notReady || []).forEach(function (n) {
      items += '<li class="not-ready">not ready: ' + esc(n.kind) + " " + (n.namespace ? esc(n.namespace) + "/" : "") +
        esc(n.name) + ": " + esc(n.reason) + "</li>";
    });
    if (r.lastTransientError) {
      items += '<li class="transient">last transient error: ' + esc(r.lastTransientError) + "</li>";
    }
    items += action("recovery", r.lastRecovery) + action("remediation", r.lastRemediation) + action("drift", r.lastDrift);
    if (items) {
      h += '<tr class="detail"><td></td><td colspan="' + (HEAD.length - 1) + '"><ul>' + items + "</ul></td></tr>";
    }
    return h;
  }
  function layer(l) {
    var id = esc(l.layer);
    var started = (l.releases || []).map(function (r) { return r.startedAt; }).filter(Boolean).sort()[0];
    var h = '<tbody class="layer" id="layer-' + id + '"><tr class="layer-row"><th scope="row">layer ' + id + "</th><td>" +
      badge(l.phase, "layer-phase") + '</td><td colspan="4"></td><td>' + time(started) + "</td><td>" + time(l.readyAt) +
      "</td><td>" + esc(started && l.readyAt ? took(started, l.readyAt) : "") + "</td></tr>";
    (l.releases || []).forEach(function (r) { h += release(r); });
    return h + "</tbody>";
  }
  function view(s) {
    var h = "<header><h1>strata</h1>" + badge(s.phase, "overall") + "</header>";
    h += '<section class="revision"><h2>Revision</h2><dl>';
    var r = s.revision;
    if (r) {
      h += '<dt>commit</dt><dd><code class="commit">' + esc(r.commit) + "</code></dd><dt>fetched at</dt><dd>" + esc(r.fetchedAt) + "</dd>";
      if (r.profilesPath) { h += "<dt>profile list</dt><dd>" + esc(r.profilesPath) + "</dd>"; }
      if (r.clusterName) { h += "<dt>cluster</dt><dd>" + esc(r.clusterName) + "</dd>"; }
    } else {
      h += "<dt>commit</dt><dd>none yet</dd>";
    }
    h += '<dt>last applied</dt><dd class="last-applied">' + (s.lastAppliedRevision ? applied(s.lastAppliedRevision) : "none yet") + "</dd>";
    if (s.leader) {
      h += "<dt>leader</dt><dd>" + (s.leader.holder ? esc(s.leader.holder) : "none") + " (lease " + esc(s.leader.lease) +
        ", this agent " + esc(s.leader.identity) + ")</dd>";
    }
    if (s.writer) { h += "<dt>writer</dt><dd>" + esc(s.writer) + "</dd>"; }
    h += "</dl></section>";
    var rej = s.rejectedRevision;
    if (s.lastError || rej) {
      h += '<section class="errors"><h2>Errors</h2>';
      if (s.lastError) { h += '<p class="last-error message">' + esc(s.lastError) + "</p>"; }
      if (rej) {
        h += "<h3>Rejected revision <code>" + esc(rej.commit) + "</code> (fetched at " + esc(rej.fetchedAt) + ')</h3><ul class="problems">';
        (rej.problems || []).forEach(function (p) { h += '<li class="problem">' + esc(problem(p)) + "</li>"; });
        h += "</ul>";
      }
      h += "</section>";
    }
    h += '<section class="layers"><h2>Layers</h2>';
    var layers = s.layers || [];
    if (!layers.length) {
      h += "<p>No layers yet.</p>";
    } else {
      h += "<table><thead><tr>";
      HEAD.forEach(function (c) { h += "<th>" + c + "</th>"; });
      h += "</tr></thead>";
      layers.forEach(function (l) { h += layer(l); });
      h += "</table>";
    }
    return h + "</section>";
  }
  function refresh() {
    fetch("status", { cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (res) {
        if (!res.ok) { throw new Error("HTTP " + res.status); }
        return res.json();
      })
      .then(function (s) {
        main.innerHTML = view(s);
        document.body.setAttribute("data-rendered", "script");
        note.textContent = "Refreshed every second; last at " + new Date().toLocaleTimeString() + ".";
      })
      .catch(function (e) {
        note.textContent = "Refresh failed (" + e.message + "); showing the last status, trying again.";
      })
      .then(function () { setTimeout(refresh, PERIOD_MS); });
  }
  setTimeout(refresh, PERIOD_MS);
})();
