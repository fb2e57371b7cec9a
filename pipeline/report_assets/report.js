// stembeam report: draws index.html's two views, the front page (run, failures, corpus plots,
// track table) and a track's view (#track=ID: players, plots over time), from the data scripts
// under data/ (pipeline/report_page.py).
// Everything from the tables (ids, uris, reasons, stem names) goes into the DOM as text
// (textContent, never innerHTML) and into Plotly labels escaped (plotText).
(function () {
  "use strict";

  var STORE = (window.STEMBEAM = window.STEMBEAM || {});
  var COLOURS = { mixture: "#595959", vocals: "#d62728", accompaniment: "#1f77b4", drums: "#ff7f0e", bass: "#9467bd", other: "#2ca02c", piano: "#8c564b" };
  var EXTRA_COLOURS = ["#17becf", "#bcbd22", "#e377c2", "#7f7f7f"];
  var PLOT_CONFIG = { displaylogo: false, responsive: true };
  var PAGE_ROWS = 50;

  // ---------------------------------------------------------------- helpers

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  // Plotly reads a small HTML subset in labels: escape what came from the tables.
  function plotText(value) {
    return String(value).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function fmt(value, digits) {
    if (value === null || value === undefined || typeof value !== "number" || !isFinite(value)) return "–";
    return value.toFixed(digits === undefined ? 1 : digits);
  }

  function colour(name, index) {
    return COLOURS[name] || EXTRA_COLOURS[index % EXTRA_COLOURS.length];
  }

  function noData(div, message) {
    clear(div);
    div.classList.add("empty");
    div.textContent = message;
  }

  function plot(div, traces, layout) {
    div.classList.remove("empty");
    var base = { margin: { l: 60, r: 20, t: 10, b: 45 }, font: { size: 12 }, showlegend: true, legend: { orientation: "h", y: -0.25 } };
    return window.Plotly.newPlot(div, traces, Object.assign(base, layout), PLOT_CONFIG);
  }

  // plotly.js (4.8 MB) is loaded after the page's text and table are drawn: parsing it is most
  // of the time a page takes to open, and nothing but the plots needs it.
  var plotlyLoaded = null;

  function loadPlotly() {
    if (!plotlyLoaded) {
      plotlyLoaded = window.Plotly ? Promise.resolve() : loadScript("assets/plotly.min.js").catch(function () {
        window.Plotly = { newPlot: function (div) { noData(div, "assets/plotly.min.js is missing: write the report again (stembeam report OUTPUT)."); return Promise.resolve(); },
          purge: function () {} };
      });
    }
    return plotlyLoaded;
  }

  function loadScript(src) {
    return new Promise(function (resolve, reject) {
      var script = document.createElement("script");
      script.src = src;
      script.onload = function () { script.remove(); resolve(); };
      script.onerror = function () { script.remove(); reject(new Error("cannot load " + src)); };
      document.head.appendChild(script);
    });
  }

  // CRC-32 of the UTF-8 bytes (zlib.crc32 in report_page.shard_of).
  var CRC_TABLE = (function () {
    var table = new Uint32Array(256);
    for (var n = 0; n < 256; n++) {
      var c = n;
      for (var k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
    return table;
  })();

  function crc32(text) {
    var bytes = new TextEncoder().encode(text);
    var crc = 0xffffffff;
    for (var i = 0; i < bytes.length; i++) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
    return (crc ^ 0xffffffff) >>> 0;
  }

  function shardFile(shard) {
    return "data/tracks/" + String(shard).padStart(5, "0") + ".js";
  }

  // One page, two views: the front page, and a track's view at #track=<percent-encoded id>.
  var TRACK_HASH = "#track=";

  function trackHref(id) {
    return TRACK_HASH + encodeURIComponent(id);
  }

  function card(parent, label, value, bad) {
    var box = el("div", "card" + (bad ? " bad" : ""));
    box.appendChild(el("div", "value", value));
    box.appendChild(el("div", "label", label));
    parent.appendChild(box);
  }

  function facts(parent, pairs) {
    var list = el("dl", "facts");
    pairs.forEach(function (pair) {
      if (pair[1] === null || pair[1] === undefined || pair[1] === "") return;
      list.appendChild(el("dt", null, pair[0]));
      list.appendChild(el("dd", null, pair[1]));
    });
    parent.appendChild(list);
  }

  function simpleTable(parent, headers, rows) {
    var table = el("table");
    var head = table.createTHead().insertRow();
    headers.forEach(function (h) { head.appendChild(el("th", h.num ? "num" : null, h.label)); });
    var body = table.createTBody();
    rows.forEach(function (row) {
      var tr = body.insertRow();
      row.forEach(function (cell, k) {
        var td = tr.insertCell();
        if (headers[k].num) td.className = "num";
        if (cell instanceof Node) td.appendChild(cell);
        else td.textContent = cell === null || cell === undefined ? "–" : String(cell);
      });
    });
    parent.appendChild(table);
    return table;
  }

  function link(href, text) {
    var a = el("a", null, text);
    a.href = href;
    return a;
  }

  // ---------------------------------------------------------------- front page

  function renderRun(summary) {
    var counts = summary.counts;
    var cards = document.getElementById("run-cards");
    card(cards, "tracks", counts.tracks);
    card(cards, "ok", counts.ok);
    card(cards, "failed", counts.failed, counts.failed > 0);
    if (summary.has_metadata && counts.separated !== null) {
      card(cards, "separated by the latest run", counts.separated);
      card(cards, "already done (earlier runs)", counts.already_done);
    }
    if (counts.audio_hours >= 1) card(cards, "hours of audio", fmt(counts.audio_hours, 1));
    else card(cards, "minutes of audio", fmt(counts.audio_hours * 60, 1));
    if (summary.has_features) {
      card(cards, "features ok", counts.features_ok);
      card(cards, "features failed", counts.features_failed, counts.features_failed > 0);
    }
    var runs = summary.runs;
    var latest = runs.length ? runs[runs.length - 1] : null;
    facts(document.getElementById("run-facts"), [
      ["output", summary.output],
      ["stems", summary.stems.join(", ") || null],
      ["model", latest ? latest.model.join(", ") : null],
      ["codec", latest ? latest.codec.join(", ") : null],
      ["precision", latest ? latest.precision.join(", ") : null],
      ["bit depth", latest && latest.bit_depth.length ? latest.bit_depth.join(", ") : null],
      ["frequency bins (F)", latest ? latest.F.join(", ") : null],
      ["stembeam version (pipeline)", latest ? latest.pipeline_version.join(", ") : null],
      ["features", summary.has_features
        ? "version " + (summary.feature_versions.join(", ") || "–") + "; vocal pitch " + (summary.vocal_pitch ? "yes" : "no") +
          "; frame series " + (summary.has_frames ? "yes" : "no (--feature_frames)")
        : "none (run with --features, or stembeam features)"],
      ["latest run started", summary.run_started],
      ["latest run's flags", summary.run_flags.length ? summary.run_flags.join(" ") : (summary.run_started ? "the defaults" : null)],
      ["report written", summary.generated_at + (summary.version ? " by stembeam " + summary.version : "")],
    ]);
    var host = document.getElementById("run-table");
    if (!runs.length) return;
    host.appendChild(el("p", "note", summary.run_started
      ? "Runs: tracks whose stems were written before and since the latest run started."
      : "Runs: tracks grouped by when their stems were written (more than " + Math.round(summary.run_gap_s / 60) + " minutes apart: another run)." +
        (summary.more_runs ? " " + summary.more_runs + " older runs not shown." : "")));
    simpleTable(host, [
      { label: "first" }, { label: "last" }, { label: "tracks ok", num: true }, { label: "failed", num: true }, { label: "hours", num: true },
      { label: "model" }, { label: "codec" }, { label: "precision" }, { label: "version" },
    ], runs.map(function (run) {
      return [run.first, run.last, run.tracks_ok, run.tracks_failed, fmt(run.audio_hours, 3), run.model.join(", "), run.codec.join(", "),
        run.precision.join(", "), run.pipeline_version.join(", ")];
    }));
  }

  function renderFailures(failures) {
    var host = document.getElementById("failures-body");
    if (!failures.total) {
      host.appendChild(el("p", "note", "No failures."));
      return;
    }
    host.appendChild(el("p", "note", failures.total + " failed " + (failures.total === 1 ? "track" : "tracks") +
      ", grouped by reason (file names left out). Every failed track is in the table below (status: failed)."));
    failures.groups.forEach(function (group) {
      var details = el("details", "failure");
      details.open = failures.groups.length <= 5;
      var summary = el("summary");
      summary.appendChild(el("span", "count", group.count + " ×"));
      summary.appendChild(document.createTextNode((group.stage === "features" ? "features: " : "") + group.reason));
      details.appendChild(summary);
      simpleTable(details, [{ label: "track" }, { label: "file" }, { label: "reason" }], group.rows.map(function (row) {
        return [link(trackHref(row.id), row.id), row.file, row.reason];
      }));
      if (group.count > group.rows.length) details.appendChild(el("p", "note", (group.count - group.rows.length) + " more in the track table."));
      host.appendChild(details);
    });
    if (failures.more_groups) host.appendChild(el("p", "note", failures.more_groups + " more reasons (" + failures.more_rows + " tracks) in the track table."));
  }

  function boxTraces(stats) {
    return stats.filter(function (s) { return s.n > 0; }).map(function (s, i) {
      return {
        type: "box", name: plotText(s.source), x: [plotText(s.source)], q1: [s.q1], median: [s.median], q3: [s.q3], lowerfence: [s.min],
        upperfence: [s.max], mean: [s.mean], marker: { color: colour(s.source, i) }, hoverinfo: "y", showlegend: false,
      };
    });
  }

  // A count axis with whole-number ticks.
  function countAxis(counts) {
    var top = Math.max.apply(null, counts.concat([1]));
    return { title: { text: "tracks" }, rangemode: "tozero", dtick: Math.max(1, Math.ceil(top / 6)), tickformat: "d" };
  }

  function barsOf(hist, colourName, name) {
    var x = [], width = [];
    for (var i = 0; i < hist.counts.length; i++) {
      x.push((hist.edges[i] + hist.edges[i + 1]) / 2);
      width.push(hist.edges[i + 1] - hist.edges[i]);
    }
    return { type: "bar", x: x, y: hist.counts, width: width, name: name, marker: { color: colourName }, showlegend: false };
  }

  function note(id, text) {
    var node = document.getElementById(id);
    if (node) node.textContent = text;
  }

  function renderCorpusPlots(summary) {
    var plots = summary.plots;
    var drawn = [];
    var missing = summary.has_features ? "no values in this output's features" : "no features in this output: run the pipeline with --features (or stembeam features)";
    var div = document.getElementById("plot-loudness");
    var counted = function (stats) { return stats.map(function (s) { return s.source + " n = " + s.n; }).join(", ") + "."; };
    if (plots.loudness.some(function (s) { return s.n > 0; })) {
      drawn.push(plot(div, boxTraces(plots.loudness), { yaxis: { title: { text: "LUFS" } }, showlegend: false }));
      note("note-loudness", "Boxes: quartiles, whiskers: lowest and highest (silent sources have none); " + counted(plots.loudness));
    } else noData(div, missing);
    div = document.getElementById("plot-share");
    if (plots.share.some(function (s) { return s.n > 0; })) {
      drawn.push(plot(div, boxTraces(plots.share), { yaxis: { title: { text: "dB re the mixture" } }, showlegend: false }));
      note("note-share", "10·log10 of the stem's mean square over the mixture's; boxes: quartiles, whiskers: lowest and highest; " + counted(plots.share));
    } else noData(div, missing);
    div = document.getElementById("plot-tempo");
    if (plots.tempo) {
      drawn.push(plot(div, [barsOf(plots.tempo, "#1f77b4", "tracks")], { xaxis: { title: { text: "BPM" } }, yaxis: countAxis(plots.tempo.counts), bargap: 0.05 }));
      note("note-tempo", plots.tempo.n + " tracks, 5 BPM bins.");
    } else noData(div, missing);
    div = document.getElementById("plot-key");
    if (plots.key) {
      var modes = Object.keys(plots.key.modes);
      drawn.push(plot(div, modes.map(function (mode, i) {
        return { type: "bar", name: plotText(mode), x: plots.key.tonics.map(plotText), y: plots.key.modes[mode],
          marker: { color: { major: "#ff7f0e", minor: "#9467bd" }[mode] || EXTRA_COLOURS[i % EXTRA_COLOURS.length] } };
      }), { barmode: "group", yaxis: countAxis([].concat.apply([], modes.map(function (m) { return plots.key.modes[m]; }))), legend: { orientation: "h", y: 1.12 } }));
    } else noData(div, missing);
    div = document.getElementById("plot-vocals");
    if (plots.vocals) {
      drawn.push(plot(div, [barsOf(plots.vocals, "#d62728", "tracks")], { xaxis: { title: { text: "% of the track with vocal activity" }, range: [0, 100] },
        yaxis: countAxis(plots.vocals.counts), bargap: 0.05 }));
      note("note-vocals", plots.vocals.n + " tracks, 5 % bins.");
    } else noData(div, missing);
    return Promise.all(drawn);
  }

  // Numeric filter: "120", ">120", "<= -14", "100..130" (or "100-130" for positives).
  function numericFilter(text) {
    var t = text.trim();
    if (!t) return null;
    var num = "(-?\\d+(?:\\.\\d+)?)";
    var m = new RegExp("^" + num + "\\s*(?:\\.\\.|to)\\s*" + num + "$").exec(t) || new RegExp("^(\\d+(?:\\.\\d+)?)\\s*-\\s*(\\d+(?:\\.\\d+)?)$").exec(t);
    if (m) {
      var lo = parseFloat(m[1]), hi = parseFloat(m[2]);
      return function (v) { return v !== null && v >= lo && v <= hi; };
    }
    m = new RegExp("^(<=|>=|<|>|=)?\\s*" + num + "$").exec(t);
    if (!m) return undefined;
    var x = parseFloat(m[2]);
    switch (m[1]) {
      case "<": return function (v) { return v !== null && v < x; };
      case ">": return function (v) { return v !== null && v > x; };
      case "<=": return function (v) { return v !== null && v <= x; };
      case ">=": return function (v) { return v !== null && v >= x; };
      default: return function (v) { return v !== null && v === x; };
    }
  }

  function TrackTable(table) {
    this.columns = table.columns;
    this.data = table.data;
    this.rows = table.rows;
    this.filters = {};
    this.sortKey = "id";
    this.sortDir = 1;
    this.page = 0;
    this.view = [];
    this.element = document.getElementById("track-table");
    this.pager = document.getElementById("pager");
    this.buildHead();
    this.apply();
  }

  TrackTable.prototype.buildHead = function () {
    var self = this;
    var head = this.element.createTHead();
    var labels = head.insertRow(), inputs = head.insertRow();
    this.columns.forEach(function (column) {
      var th = el("th", column.type === "number" ? "num" : null);
      var button = el("button", "sort", column.label);
      button.type = "button";
      button.dataset.key = column.key;
      button.addEventListener("click", function () {
        self.sortDir = self.sortKey === column.key ? -self.sortDir : 1;
        self.sortKey = column.key;
        self.apply();
      });
      th.appendChild(button);
      labels.appendChild(th);
      var cell = el("th");
      var input;
      if (column.key === "status") {
        input = el("select");
        ["", "ok", "failed", "features failed"].forEach(function (value) {
          var option = el("option", null, value || "all");
          option.value = value;
          input.appendChild(option);
        });
      } else {
        input = el("input");
        input.type = "search";
        input.placeholder = column.type === "number" ? ">120, 100..130" : "filter";
      }
      input.dataset.key = column.key;
      input.setAttribute("aria-label", "filter " + column.label);
      input.addEventListener("input", function () { self.setFilter(column, input); });
      input.addEventListener("change", function () { self.setFilter(column, input); });
      cell.appendChild(input);
      inputs.appendChild(cell);
    });
    this.body = this.element.createTBody();
  };

  TrackTable.prototype.setFilter = function (column, input) {
    var value = input.value;
    var test;
    if (column.key === "status") test = value ? function (v) { return v === value; } : null;
    else if (column.type === "number") {
      test = numericFilter(value);
      input.classList.toggle("invalid", test === undefined);
      if (test === undefined) test = null;
    } else {
      var needle = value.trim().toLowerCase();
      test = needle ? function (v) { return v !== null && String(v).toLowerCase().indexOf(needle) >= 0; } : null;
    }
    if (test) this.filters[column.key] = test;
    else delete this.filters[column.key];
    this.page = 0;
    this.apply();
  };

  TrackTable.prototype.apply = function () {
    var data = this.data, filters = this.filters, keys = Object.keys(filters);
    var view = [];
    for (var i = 0; i < this.rows; i++) {
      var keep = true;
      for (var k = 0; k < keys.length && keep; k++) keep = filters[keys[k]](data[keys[k]][i]);
      if (keep) view.push(i);
    }
    var values = data[this.sortKey], dir = this.sortDir;
    view.sort(function (a, b) {
      var x = values[a], y = values[b];
      if (x === y) return a - b;
      if (x === null) return 1;  // empty cells last either way
      if (y === null) return -1;
      return (x < y ? -1 : 1) * dir;
    });
    this.view = view;
    this.render();
  };

  TrackTable.prototype.render = function () {
    var self = this;
    var body = clear(this.body);
    var pages = Math.max(1, Math.ceil(this.view.length / PAGE_ROWS));
    this.page = Math.min(this.page, pages - 1);
    var start = this.page * PAGE_ROWS, end = Math.min(this.view.length, start + PAGE_ROWS);
    for (var r = start; r < end; r++) {
      var i = this.view[r];
      var tr = body.insertRow();
      tr.dataset.id = this.data.id[i];
      this.columns.forEach(function (column) {
        var value = self.data[column.key][i];
        var td = tr.insertCell();
        td.dataset.key = column.key;
        if (column.key === "id") {
          td.className = "text";
          td.appendChild(link(trackHref(value), value));
        } else if (column.key === "status") {
          td.textContent = value;
          td.className = "status-" + String(value).replace(/\s+/g, "-");
        } else if (column.key === "error") {
          td.className = "reason";
          td.textContent = value === null ? "" : value;
        } else if (column.type === "number") {
          td.className = "num";
          td.textContent = value === null ? "–" : String(value);
        } else td.textContent = value === null ? "–" : value;
      });
    }
    this.element.querySelectorAll("button.sort").forEach(function (button) {
      var arrow = button.dataset.key === self.sortKey ? (self.sortDir > 0 ? " ▲" : " ▼") : "";
      button.textContent = self.columns.filter(function (c) { return c.key === button.dataset.key; })[0].label + arrow;
    });
    var pager = clear(this.pager);
    var previous = el("button", null, "previous"), next = el("button", null, "next");
    previous.type = next.type = "button";
    previous.disabled = this.page === 0;
    next.disabled = this.page >= pages - 1;
    previous.addEventListener("click", function () { self.page -= 1; self.render(); });
    next.addEventListener("click", function () { self.page += 1; self.render(); });
    pager.appendChild(previous);
    pager.appendChild(el("span", "note", this.view.length ? "rows " + (start + 1) + "–" + end + " of " + this.view.length +
      (this.view.length < this.rows ? " (filtered from " + this.rows + ")" : "") + ", page " + (this.page + 1) + " of " + pages : "no rows match"));
    pager.appendChild(next);
  };

  function renderIndex() {
    var summary = STORE.summary;
    if (!summary) {
      document.getElementById("run-cards").appendChild(el("p", "empty", "data/summary.js is missing: write the report again (stembeam report OUTPUT)."));
      return;
    }
    document.getElementById("title").textContent = summary.title;
    document.title = "stembeam report: " + summary.title;
    document.getElementById("subtitle").textContent = summary.output + " · written " + summary.generated_at;
    renderRun(summary);
    renderFailures(summary.failures);
    document.body.dataset.front = "ready";
    performance.mark("stembeam:summary");  // tests/benchmarks/report_scale.py reads these marks
    // Then the table, then the plots: a large corpus's table is the one big data file, plotly.js
    // the one big script; loaded one after the other, the table is usable before plotly is parsed.
    loadScript("data/tracks.js").then(function () {
      STORE.trackTable = new TrackTable(STORE.table);
      document.getElementById("table-status").textContent = STORE.table.rows + " tracks; click a column to sort, type in the boxes below it to filter.";
      document.body.dataset.table = "ready";
      performance.mark("stembeam:table");
    }, function (error) {
      document.getElementById("table-status").textContent = String(error.message);
      document.body.dataset.table = "error";
    }).then(loadPlotly).then(function () { return renderCorpusPlots(summary); }).then(function () {
      document.body.dataset.plots = "ready";
      performance.mark("stembeam:plots");
    });
  }

  // ---------------------------------------------------------------- track view

  function decodeEnvelope(b64) {
    var raw = atob(b64);
    var out = new Array(raw.length);
    for (var i = 0; i < raw.length; i++) {
      var byte = raw.charCodeAt(i);
      out[i] = byte > 127 ? byte - 256 : byte;
    }
    return out;
  }

  var activeAudio = null;

  function seekTo(seconds) {
    var audio = activeAudio || document.querySelector("#players audio");
    if (audio && isFinite(seconds)) audio.currentTime = Math.max(0, seconds);
  }

  function timePlot(div, traces, layout) {
    return plot(div, traces, layout).then(function () {
      div.on("plotly_click", function (event) { if (event.points && event.points.length) seekTo(event.points[0].x); });
    });
  }

  function renderPlayers(track) {
    var host = clear(document.getElementById("players"));
    if (!track.sources.length) {
      host.appendChild(el("p", "empty", "No audio: the track was not separated."));
      return;
    }
    track.sources.forEach(function (source) {
      var row = el("div", "player");
      row.dataset.source = source.name;
      row.appendChild(el("div", "name", source.name));
      if (source.href) {
        var audio = el("audio");
        audio.controls = true;
        audio.preload = "metadata";
        audio.src = source.href;
        audio.dataset.source = source.name;
        if (source.duration_s !== undefined) audio.dataset.expected = String(source.duration_s);
        if (source.name === "mixture") {
          audio.addEventListener("loadedmetadata", function () {
            if (track.duration_s && Math.abs(audio.duration - track.duration_s) > 0.5) {
              row.querySelector(".file").textContent += " · the whole file (" + fmt(audio.duration, 2) + " s); the stems are of a part of it (the manifest's offset and duration)";
            }
          });
        }
        audio.addEventListener("play", function () {
          activeAudio = audio;
          document.querySelectorAll("#players audio").forEach(function (other) { if (other !== audio) other.pause(); });
        });
        row.appendChild(audio);
      } else row.appendChild(el("div", "note", track.status === "ok" ? "not reachable from the report's folder" : "not separated"));
      var about = [source.uri];
      if (source.duration_s !== undefined && source.duration_s !== null) about.push(fmt(source.duration_s, 2) + " s");
      if (source.codec) about.push(source.codec);
      row.appendChild(el("div", "file", about.join(" · ")));
      host.appendChild(row);
    });
  }

  function renderFacts(track) {
    var host = clear(document.getElementById("facts-body"));
    var f = track.features;
    if (f) {
      facts(host, [
        ["tempo", f.tempo_bpm !== null ? fmt(f.tempo_bpm, 1) + " BPM (from " + f.tempo_source + ", " + f.beats.length + " beats)" : null],
        ["key", f.key_tonic ? f.key_tonic + " " + f.key_mode + " (r = " + fmt(f.key_strength, 2) + ", from " + f.tonality_source + ")" : null],
        ["tuning", f.tuning_cents !== null ? fmt(f.tuning_cents, 0) + " cents from A440" : null],
        ["vocal activity", f.vocal_presence_ratio !== null ? fmt(100 * f.vocal_presence_ratio, 1) + " % of the track, first at " + fmt(f.first_vocal_s, 2) + " s" : null],
        ["vocal f0", f.vocal_f0_median_hz !== null ? "median " + fmt(f.vocal_f0_median_hz, 1) + " Hz (5–95 %: " + fmt(f.vocal_f0_p05_hz, 1) + "–" +
          fmt(f.vocal_f0_p95_hz, 1) + " Hz), voiced " + fmt(100 * f.vocal_voiced_ratio, 1) + " %" : null],
        ["features", f.status === "ok" ? "ok" : "error: " + f.error],
      ]);
    }
    var measured = track.sources.filter(function (s) { return s.features; });
    if (!measured.length) {
      host.appendChild(el("p", "empty", track.status === "ok" ? "No features for this track: run the pipeline with --features (or stembeam features)." : "No features: the track failed."));
      return;
    }
    simpleTable(host, [
      { label: "source" }, { label: "integrated (LUFS)", num: true }, { label: "range (LU)", num: true }, { label: "peak (dBFS)", num: true },
      { label: "RMS (dBFS)", num: true }, { label: "share (dB)", num: true }, { label: "centroid (Hz)", num: true }, { label: "onsets (/s)", num: true }, { label: "status" },
    ], measured.map(function (s) {
      var m = s.features;
      return [s.name, fmt(m.integrated_lufs, 1), fmt(m.loudness_range_lu, 1), fmt(m.sample_peak_dbfs, 1), fmt(m.rms_dbfs, 1), fmt(m.share_db, 1),
        fmt(m.spectral_centroid_hz_mean, 0), fmt(m.onset_rate_hz, 2), m.status === "ok" ? "ok" : "error: " + m.error];
    }));
  }

  function xAxis(duration) {
    return { title: { text: "time (s)" }, range: [0, duration || 1], zeroline: false };
  }

  // A level axis from the quietest value shown (not below ``floor``) to the loudest.
  function levelAxis(title, traces, floor) {
    var values = [].concat.apply([], traces.map(function (t) { return t.y; })).filter(function (v) { return v !== null && isFinite(v); });
    if (!values.length) return { title: { text: title } };
    var low = Math.max(floor, Math.min.apply(null, values)), high = Math.max.apply(null, values);
    return { title: { text: title }, range: [Math.floor(low) - 2, Math.ceil(high) + 2] };
  }

  function renderLoudness(track, duration) {
    var div = document.getElementById("plot-loudness-time");
    var caption = document.getElementById("caption-loudness");
    var series = track.series;
    if (series && Object.keys(series.short_term || {}).length) {
      caption.textContent = "Short-term loudness (LUFS, 3 s windows, drawn at their centres)";
      var names = track.sources.map(function (s) { return s.name; }).filter(function (n) { return n in series.short_term; });
      var lines = names.map(function (name, i) {
        var values = series.short_term[name];
        return { type: "scatter", mode: "lines", name: plotText(name), x: values.map(function (_, k) { return 1.5 + k * series.short_term_hop_s; }), y: values,
          line: { color: colour(name, i), width: name === "mixture" ? 2.2 : 1.3 } };
      });
      return timePlot(div, lines, { xaxis: xAxis(duration), yaxis: levelAxis("LUFS", lines, -70) });
    }
    var withEnvelope = track.sources.filter(function (s) { return s.features && s.features.envelope_b64; });
    if (withEnvelope.length) {
      caption.textContent = "Level over time (RMS, dBFS, per 1/200 of the track; the short-term loudness series needs --feature_frames)";
      var steps = withEnvelope.map(function (source, i) {
        var levels = decodeEnvelope(source.features.envelope_b64);
        var span = (source.features.duration_s || duration) / levels.length;
        return { type: "scatter", mode: "lines", name: plotText(source.name), x: levels.map(function (_, k) { return (k + 0.5) * span; }), y: levels,
          line: { color: colour(source.name, i), width: source.name === "mixture" ? 2.2 : 1.3, shape: "hvh" } };
      });
      return timePlot(div, steps, { xaxis: xAxis(duration), yaxis: levelAxis("dBFS", steps, -70) });
    }
    caption.textContent = "Short-term loudness";
    noData(div, track.status === "ok" ? "No loudness over time: this output has no features for the track (run with --features)." : "No loudness: the track failed.");
  }

  function renderEvents(track, duration) {
    var div = document.getElementById("plot-events");
    var f = track.features;
    var segments = f && f.vocal_segments ? f.vocal_segments : [];
    var beats = f ? f.beats : [];
    if (!f || (!segments.length && !beats.length)) {
      noData(div, !f ? "No beats or vocal activity: no features for this track (run with --features)." : "No beats and no vocal activity found.");
      return;
    }
    var traces = [];
    if (segments.length) {
      var x = [], y = [];
      segments.forEach(function (s) {
        x.push(s[0], s[1], s[1], s[0], s[0], null);
        y.push(1.15, 1.15, 1.85, 1.85, 1.15, null);
      });
      traces.push({ type: "scatter", mode: "lines", fill: "toself", x: x, y: y, name: "vocal activity (" + segments.length + " segments)",
        line: { color: COLOURS.vocals, width: 1 }, fillcolor: "rgba(214,39,40,0.35)", hoverinfo: "x" });
    }
    if (beats.length) {
      traces.push({ type: "scatter", mode: "markers", x: beats, y: beats.map(function () { return 0.5; }), name: "beats (" + beats.length + ")",
        marker: { symbol: "line-ns-open", size: 18, color: "#222", line: { width: 1.5 } }, hoverinfo: "x" });
    }
    return timePlot(div, traces, {
      xaxis: xAxis(duration), yaxis: { range: [0, 2], tickvals: [0.5, 1.5], ticktext: ["beats", "vocals"], fixedrange: true, zeroline: false },
      legend: { orientation: "h", y: -0.45 }, margin: { l: 60, r: 20, t: 10, b: 60 },
    });
  }

  function renderF0(track, duration, summary) {
    var div = document.getElementById("plot-f0");
    var series = track.series;
    if (series && series.f0) {
      var values = series.f0;
      return timePlot(div, [{ type: "scatter", mode: "lines", connectgaps: false, name: "vocals f0", x: values.map(function (_, k) { return k * series.f0_hop_s; }),
        y: values, line: { color: COLOURS.vocals, width: 1.5 } }], { xaxis: xAxis(duration), yaxis: { title: { text: "Hz" }, type: "log" }, showlegend: false });
    }
    var f = track.features;
    if (f && f.vocal_f0_median_hz !== null) {
      noData(div, "No f0 contour: the features were computed with --vocal_pitch but without --feature_frames (median " + fmt(f.vocal_f0_median_hz, 1) + " Hz).");
    } else if (f) {
      noData(div, "No f0 contour: run the features with --vocal_pitch --feature_frames.");
    } else noData(div, "No f0 contour: no features for this track.");
  }

  function renderOverview(track, duration) {
    var div = document.getElementById("plot-overview");
    var sources = track.sources.filter(function (s) { return s.features && s.features.envelope_b64; });
    if (!sources.length) {
      noData(div, track.sources.some(function (s) { return s.features; })
        ? "No overview: these features predate envelope_db (compute them again with this stembeam)."
        : "No overview: no features for this track (run with --features).");
      return;
    }
    var amplitudes = sources.map(function (source) {
      return decodeEnvelope(source.features.envelope_b64).map(function (db) { return Math.pow(10, db / 20); });
    });
    var top = Math.max.apply(null, amplitudes.map(function (a) { return Math.max.apply(null, a); })) || 1;
    var traces = [], layout = { xaxis: xAxis(duration), showlegend: false, margin: { l: 110, r: 20, t: 10, b: 45 } };
    layout.xaxis.anchor = sources.length > 1 ? "y" + sources.length : "y";  // the time axis under the lowest source
    var gap = 0.03, height = (1 - gap * (sources.length - 1)) / sources.length;
    sources.forEach(function (source, i) {
      var a = amplitudes[i];
      var span = (source.features.duration_s || duration) / a.length;
      var x = [], y = [];
      for (var k = 0; k < a.length; k++) { x.push((k + 0.5) * span); y.push(a[k]); }
      for (k = a.length - 1; k >= 0; k--) { x.push((k + 0.5) * span); y.push(-a[k]); }
      var axis = i ? "y" + (i + 1) : "y";
      traces.push({ type: "scatter", mode: "lines", fill: "toself", x: x, y: y, yaxis: axis, name: plotText(source.name), line: { color: colour(source.name, i), width: 0.8 },
        hoverinfo: "x+name" });
      var top_ = 1 - i * (height + gap);
      layout[i ? "yaxis" + (i + 1) : "yaxis"] = { domain: [Math.max(0, top_ - height), top_], range: [-top, top], showticklabels: false, zeroline: false,
        title: { text: plotText(source.name), standoff: 4 }, fixedrange: true };
    });
    return timePlot(div, traces, layout);
  }

  function showTrack(track) {
    ["plot-loudness-time", "plot-events", "plot-f0", "plot-overview"].forEach(function (id) {
      var div = document.getElementById(id);
      if (window.Plotly && div.data) window.Plotly.purge(div);
      clear(div);
    });
    activeAudio = null;
    document.getElementById("track-title").textContent = track.id;
    document.title = "stembeam report: " + track.id;
    var status = document.getElementById("track-status");
    status.textContent = (track.status === "ok" ? "separated" : "failed") + (track.duration_s !== null ? " · " + fmt(track.duration_s, 2) + " s" : "") +
      (track.model ? " · " + track.model : "") + (track.precision ? " (" + track.precision + ")" : "") + (track.created_at ? " · " + track.created_at : "");
    document.getElementById("track-reason").textContent = track.error || (track.features && track.features.status === "error" ? "features: " + track.features.error : "");
    renderPlayers(track);
    renderFacts(track);
    var duration = track.duration_s || 1;
    return loadPlotly().then(function () {
      return Promise.all([renderLoudness(track, duration), renderEvents(track, duration), renderF0(track, duration), renderOverview(track, duration)]);
    });
  }

  var shown = 0;  // the latest track view asked for: an earlier one still loading is dropped

  function renderTrack(id) {
    var summary = STORE.summary;
    var token = ++shown;
    document.body.dataset.track = "";
    document.body.dataset.trackId = "";
    function done(state) {
      document.body.dataset.trackId = id;
      document.body.dataset.track = state;
    }
    ["track-title", "track-status", "track-reason"].forEach(function (name) { document.getElementById(name).textContent = ""; });
    clear(document.getElementById("players"));
    clear(document.getElementById("facts-body"));
    if (!summary) {
      document.getElementById("track-title").textContent = "data/summary.js is missing: write the report again (stembeam report OUTPUT).";
      return;
    }
    if (!id) {
      document.getElementById("track-title").textContent = "No track chosen: pick one from the table on the front page.";
      return;
    }
    var shard = crc32(id) % summary.shards;
    var name = "shard:" + shard;
    var ready = STORE[name] ? Promise.resolve() : loadScript(shardFile(shard));
    ready.then(function () {
      if (token !== shown) return;
      var track = STORE[name] && Object.prototype.hasOwnProperty.call(STORE[name], id) ? STORE[name][id] : null;
      if (!track) {
        document.getElementById("track-title").textContent = id;
        document.getElementById("track-status").textContent = "This track is not in the report.";
        done("missing");
        return;
      }
      return showTrack(track).then(function () {
        if (token !== shown) return;
        done("ready");
        performance.mark("stembeam:track");
      });
    }).catch(function (error) {
      document.getElementById("track-status").textContent = String(error.message);
      done("error");
    });
  }

  var frontDrawn = false, frontScroll = 0;

  function route() {
    var front = document.getElementById("front"), view = document.getElementById("track");
    var hash = location.hash;
    if (hash.indexOf(TRACK_HASH) === 0) {
      var id = hash.slice(TRACK_HASH.length);
      try {
        id = decodeURIComponent(id);
      } catch (error) {
        // not percent-encoded as the table's links are: taken as it is
      }
      if (!front.hidden) frontScroll = window.scrollY;
      front.hidden = true;
      view.hidden = false;
      window.scrollTo(0, 0);
      renderTrack(id);
      return;
    }
    document.querySelectorAll("#players audio").forEach(function (audio) { audio.pause(); });
    view.hidden = true;
    front.hidden = false;
    if (STORE.summary) document.title = "stembeam report: " + STORE.summary.title;
    if (!frontDrawn) {
      frontDrawn = true;
      renderIndex();  // only when first shown: a track view opened from a link does not load the table
    } else window.scrollTo(0, frontScroll);
  }

  document.addEventListener("DOMContentLoaded", function () {
    window.addEventListener("hashchange", route);
    route();
  });
})();
