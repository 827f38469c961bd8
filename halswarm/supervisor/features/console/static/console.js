/* hal-supervisor console: live updates of server-rendered pages (no framework, no build step).
 *
 * An element #live[data-stream][data-src][data-target] opens an EventSource on data-stream (the
 * supervisor's event stream; the login cookie authenticates it) and, when events arrive, fetches
 * data-src (an HTML fragment rendered and escaped by the server) into #data-target. The first event after
 * a quiet period refreshes at once (leading edge); events of a burst within REFRESH_MS of a refresh are
 * folded into one more refresh at the end of that window (trailing edge); and once more SETTLE_MS after
 * the last event. #live[data-state] is "open" while the stream is connected, "closed" otherwise; a closed
 * stream is reopened with backoff (a supervisor restart), and a lost login sends the page to /ui/login.
 */
(function () {
  "use strict";
  var REFRESH_MS = 400;
  var SETTLE_MS = 1500;
  var MAX_BACKOFF_MS = 10000;

  function start(live) {
    var target = document.getElementById(live.getAttribute("data-target"));
    var src = live.getAttribute("data-src");
    var types = (live.getAttribute("data-types") || "").split(",").filter(Boolean);
    var source = null;
    var backoff = 500;
    var timer = null;
    var dirty = false;
    var settle = null;
    var inflight = false;
    var again = false;

    function setState(state) {
      live.setAttribute("data-state", state);
      live.textContent = state === "open" ? "live" : "live: reconnecting";
    }

    function refresh() {
      if (!target || !src) { return; }
      if (inflight) { again = true; return; }
      inflight = true;
      fetch(src, {credentials: "same-origin", cache: "no-store", headers: {"Accept": "text/html"}})
        .then(function (resp) {
          if (resp.redirected && resp.url.indexOf("/ui/login") !== -1) {
            window.location.assign("/ui/login");
            return null;
          }
          return resp.ok ? resp.text() : null;
        })
        .then(function (html) {
          if (html !== null && html !== undefined && !editing(target)) { target.innerHTML = html; }
        })
        .catch(function () { /* the stream's reconnect covers it */ })
        .then(function () {
          inflight = false;
          if (again) { again = false; schedule(); }
        });
    }

    function editing(el) {
      var a = document.activeElement;
      return a && el.contains(a) && (a.tagName === "TEXTAREA" || a.tagName === "INPUT");
    }

    /* Leading + trailing throttle: no refresh running its window -> refresh now and open a window of
       REFRESH_MS; events inside the window only mark it dirty; a dirty window ends in one refresh (which
       opens the next window), a clean one just closes. */
    function windowEnd() {
      timer = null;
      if (dirty) { dirty = false; refresh(); timer = window.setTimeout(windowEnd, REFRESH_MS); }
    }

    function schedule() {
      if (timer === null) {
        refresh();
        timer = window.setTimeout(windowEnd, REFRESH_MS);
      } else {
        dirty = true;
      }
      /* One more look once the events stop: state the supervisor folds in just after storing the
         event (a session's status) is then on the page even if the first refresh came too early. */
      if (settle !== null) { window.clearTimeout(settle); }
      settle = window.setTimeout(function () { settle = null; refresh(); }, SETTLE_MS);
    }

    function wanted(data) {
      if (!types.length) { return true; }
      try {
        var t = JSON.parse(data).type || "";
        return types.some(function (p) { return t.indexOf(p) === 0; });
      } catch (e) { return true; }
    }

    function open() {
      source = new EventSource(live.getAttribute("data-stream"));
      source.onopen = function () {
        backoff = 500;
        setState("open");
        refresh();  /* catch up with whatever happened while closed */
      };
      source.onmessage = function (ev) { if (wanted(ev.data)) { schedule(); } };
      source.onerror = function () {
        setState("closed");
        if (source.readyState === EventSource.CLOSED) {
          source = null;
          window.setTimeout(probe, backoff);
          backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
        }
      };
    }

    /* After a refused or failed stream: reopen when the supervisor answers, or go to the login page. */
    function probe() {
      fetch("/ui/whoami", {credentials: "same-origin", cache: "no-store"})
        .then(function (resp) {
          if (resp.status === 401) { window.location.assign("/ui/login"); return; }
          open();
        })
        .catch(function () {
          window.setTimeout(probe, backoff);
          backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
        });
    }

    setState("closed");
    open();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("live");
    if (live && window.EventSource && window.fetch) { start(live); }
  });
})();
