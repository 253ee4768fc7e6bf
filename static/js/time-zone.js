// AccessGov: the person's time zone from the browser (issue 18). CSP-safe: no inline script, no eval.
// 1. A page whose <body> has data-time-zone-url (the person has not chosen a zone yet) saves the
//    browser's zone once; the server only fills an empty setting, never overrides a choice.
// 2. An empty zone field (input[data-browser-zone]) is filled with the browser's zone.
(function () {
  "use strict";
  var zone = "";
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (e) {
    zone = "";
  }
  document.addEventListener("DOMContentLoaded", function () {
    if (!zone) return;
    document.querySelectorAll("input[data-browser-zone]").forEach(function (input) {
      if (!input.value) input.value = zone;
    });
    var body = document.body;
    var url = body.getAttribute("data-time-zone-url");
    if (!url || !window.fetch) return;
    var token = "";
    try {
      token = JSON.parse(body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch (e) {
      return;
    }
    var form = new URLSearchParams();
    form.set("time_zone", zone);
    form.set("auto", "1");
    window.fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": token, "Content-Type": "application/x-www-form-urlencoded" },
      body: form.toString()
    }).then(function (response) {
      if (response.status === 204) body.removeAttribute("data-time-zone-url");
    }).catch(function () { /* the next page tries again */ });
  });
})();
