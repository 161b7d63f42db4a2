// Live refresh for the jobs admin pages: each element with data-live="kind" and data-api="url"
// polls its JSON every 2 s (never faster, and not while the tab is hidden) and redraws itself.
// Text goes in with textContent only: nothing from a job is ever parsed as HTML.
"use strict";
(function () {
  var POLL_MS = 2000;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      var value = attrs[name];
      if (value === null || value === undefined || value === false) { return; }
      if (name === "text") { node.textContent = String(value); } else { node.setAttribute(name, String(value)); }
    });
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) { return; }
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) { return ""; }
    if (seconds < 1) { return Math.round(seconds * 1000) + " ms"; }
    if (seconds < 60) { return seconds.toFixed(1) + " s"; }
    var whole = Math.floor(seconds);
    var steps = [[86400, 3600, "d", "h"], [3600, 60, "h", "min"], [60, 1, "min", "s"]];
    for (var i = 0; i < steps.length; i++) {
      var big = steps[i][0], small = steps[i][1];
      if (whole >= big) {
        var rest = Math.floor((whole % big) / small);
        return Math.floor(whole / big) + " " + steps[i][2] + (rest ? " " + rest + " " + steps[i][3] : "");
      }
    }
    return whole + " s";
  }

  var STATE_CLASSES = { waiting: "waiting", queued: "queued", started: "running", completed: "ok", failed: "bad", cancelled: "off" };

  function stateBadge(state) {
    return el("span", { "class": "state s-" + (STATE_CLASSES[state] || "unknown"), text: state === "started" ? "running" : state });
  }

  function progress(value, estimated) {
    var bar = el("progress", { "class": "pbar" + (estimated ? " estimated" : ""), max: "1" });
    var pct = el("span", { "class": "pct" });
    if (value !== null && value !== undefined) {
      bar.value = value;
      pct.textContent = Math.round(value * 100) + "%" + (estimated ? "*" : "");
      if (estimated) { bar.title = "estimated from past durations"; }
    } else {
      bar.title = "no progress reported yet";
    }
    return [bar, pct];
  }

  function postButton(action, label, css) {
    var token = document.querySelector("main").dataset.csrf;
    if (!token) { return null; }
    return el("form", { "class": "inline", method: "post", action: action }, [
      el("input", { type: "hidden", name: "csrf_token", value: token }),
      el("input", { type: "hidden", name: "next", value: location.pathname + location.search }),
      el("button", { type: "submit", "class": css, text: label })
    ]);
  }

  function setCounts(root, data) {
    root.querySelectorAll("[data-count]").forEach(function (node) {
      var value = node.dataset.count.split(".").reduce(function (obj, key) { return obj ? obj[key] : undefined; }, data);
      if (value !== undefined && value !== null) { node.textContent = String(value); }
    });
  }

  function replaceRows(tbody, rows, columns, emptyText) {
    var fresh = rows.map(function (row) { return row; });
    if (!fresh.length) {
      fresh = [el("tr", { "class": "empty-row" }, [el("td", { colspan: columns, "class": "empty", text: emptyText })])];
    }
    tbody.replaceChildren.apply(tbody, fresh);
  }

  // -- the queue ------------------------------------------------------------------------------
  function renderQueue(tbody, data) {
    setCounts(document, data);
    var limit = document.getElementById("queue-limit");
    if (limit) { limit.hidden = data.total <= data.limit; }
    var rows = data.jobs.map(function (job) {
      var running = job.state === "started";
      var when = running ? "running " + duration(job.elapsed)
        : job.due_in > 0 ? "due in " + duration(job.due_in) : "waiting " + duration(job.waited);
      var attempts = String(job.attempts) + (job.retry_limit === null ? "" : "/" + (job.retry_limit + 1));
      return el("tr", { "data-id": job.id, "class": job.cancelling ? "cancelling" : null }, [
        el("td", {}, [el("a", { href: job.url, text: "#" + job.id })]),
        el("td", { text: job.command }),
        el("td", {}, [stateBadge(job.state), job.cancelling ? el("span", { "class": "muted", text: " stopping" }) : null]),
        el("td", { "class": "progress-col" }, running ? progress(job.progress, job.progress_estimated) : []),
        el("td", { "class": "status", text: job.status || "" }),
        el("td", { "class": "nowrap", text: when }),
        el("td", { text: job.worker || "pool" }),
        el("td", { "class": "num", text: attempts }),
        el("td", { text: job.tag || "" }),
        el("td", {}, [job.cancelling ? null : postButton(job.cancel_url, "Cancel", "danger small")])
      ]);
    });
    replaceRows(tbody, rows, 10, "The queue is empty.");
  }

  // -- one job ---------------------------------------------------------------------------------
  function renderJob(section, data) {
    var job = data.job;
    var stateNode = document.getElementById("job-state");
    if (stateNode && stateNode.dataset.state !== data.state) {
      stateNode.dataset.state = data.state;
      stateNode.replaceChildren(stateBadge(data.state));
    }
    var bar = document.getElementById("job-progress");
    if (bar) {
      if (data.state === "started" || (data.final && data.progress !== null)) {
        var existing = bar.querySelector("progress");
        if (existing && data.progress !== null && existing.hasAttribute("value") && !data.progress_estimated === !existing.classList.contains("estimated")) {
          existing.value = data.progress;
          bar.querySelector(".pct").textContent = Math.round(data.progress * 100) + "%" + (data.progress_estimated ? "*" : "");
        } else {
          bar.replaceChildren.apply(bar, progress(data.progress, data.progress_estimated));
        }
      }
    }
    var status = document.getElementById("job-status");
    if (status) { status.textContent = job.status || ""; }
    var elapsed = document.getElementById("job-elapsed");
    if (elapsed) { elapsed.textContent = data.elapsed === null ? "" : "running " + duration(data.elapsed); }
    var attempts = document.getElementById("job-attempts");
    if (attempts) {
      attempts.textContent = job.attempts + (job.retry_limit === null || job.retry_limit === undefined ? "" : " of at most " + (job.retry_limit + 1));
    }
    var log = document.getElementById("job-log");
    if (log && log.textContent !== (job.logs || "")) {
      var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
      log.textContent = job.logs || "";
      log.hidden = !job.logs;
      if (atBottom) { log.scrollTop = log.scrollHeight; }
      var empty = document.getElementById("log-empty");
      if (empty) { empty.hidden = !!job.logs; }
    }
    if (data.final) {
      document.getElementById("finished-note").hidden = false;
      document.querySelectorAll(".actions form[action$='/cancel']").forEach(function (form) { form.remove(); });
      return false; // nothing changes any more: stop polling
    }
    return true;
  }

  // -- workers ---------------------------------------------------------------------------------
  function renderWorkers(tbody, data) {
    var badge = { live: "ok", lost: "bad", stopped: "off" };
    var rows = data.processes.map(function (p) {
      var named = p.workers === null ? "all" : p.workers.length ? p.workers.join(", ") : "none";
      var jobs = p.jobs.length ? [] : [el("span", { "class": "muted", text: "none" })];
      p.jobs.forEach(function (job, index) {
        if (index) { jobs.push(", "); }
        jobs.push(el("a", { href: job.url, text: "#" + job.id }));
        jobs.push(" " + job.command);
      });
      return el("tr", { "class": "p-" + p.status, "data-id": p.id }, [
        el("td", { "class": "small", text: p.id }),
        el("td", {}, [el("span", { "class": "state s-" + badge[p.status], text: p.status })]),
        el("td", { text: p.host }),
        el("td", { "class": "num", text: p.pid }),
        el("td", { "class": "num", text: p.threads }),
        el("td", { text: named }),
        el("td", { text: p.scheduler ? "yes" : "no" }),
        el("td", { "class": "nowrap", text: new Date(p.started_at * 1000).toISOString().slice(0, 19).replace("T", " ") }),
        el("td", { "class": "nowrap", text: duration(p.heartbeat_age) + " ago" }),
        el("td", {}, jobs)
      ]);
    });
    replaceRows(tbody, rows, 10, "No worker process has run yet.");
  }

  var RENDERERS = {
    queue: renderQueue,
    job: renderJob,
    workers: renderWorkers,
    dashboard: function (root, data) { setCounts(root, data); }
  };

  function poll(url, render) {
    var status = document.getElementById("live-status");
    var timer = null;
    var busy = false;
    var stopped = false;
    function schedule() {
      busy = false;
      if (!stopped && !document.hidden) { timer = setTimeout(tick, POLL_MS); }
    }
    function tick() {
      timer = null;
      busy = true;
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        })
        .then(function (data) {
          if (status) { status.hidden = true; }
          if (render(data) === false) { stopped = true; }
          schedule();
        })
        .catch(function (error) {
          if (status) { status.textContent = "Live refresh failed (" + error.message + "); retrying"; status.hidden = false; }
          schedule();
        });
    }
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && timer === null && !busy && !stopped) { tick(); }
    });
    schedule();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.documentElement.classList.add("js");
    document.querySelectorAll("[data-live][data-api]").forEach(function (node) {
      var render = RENDERERS[node.dataset.live];
      if (render) { poll(node.dataset.api, function (data) { return render(node, data); }); }
    });
    // Pickers apply as soon as they change.
    document.querySelectorAll("select.autosubmit").forEach(function (select) {
      select.addEventListener("change", function () {
        if (select.form) { select.form.requestSubmit ? select.form.requestSubmit() : select.form.submit(); }
      });
    });
  });
})();
