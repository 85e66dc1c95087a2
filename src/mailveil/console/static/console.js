// The console works without this file. With it, a running send's progress refreshes itself
// every two seconds (the section is fetched from the same page and swapped in).
(function () {
  "use strict";
  var live = document.getElementById("send-live");
  if (!live || live.getAttribute("data-while") !== "yes") { return; }
  var url = live.getAttribute("data-refresh");
  function tick() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("send-live");
        if (!fresh) { return; }
        live.replaceWith(fresh);
        live = fresh;
        if (fresh.getAttribute("data-while") === "yes") { setTimeout(tick, 2000); }
      })
      .catch(function () { setTimeout(tick, 5000); });
  }
  setTimeout(tick, 2000);
}());
