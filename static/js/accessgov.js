// AccessGov progressive enhancements. Every page works without this file.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    // Live countdowns: <time data-countdown="ISO-8601">…</time>
    const timers = document.querySelectorAll("[data-countdown]");
    if (!timers.length) return;
    const tick = function () {
      const now = Date.now();
      timers.forEach(function (el) {
        const left = Math.max(0, Math.floor((Date.parse(el.dataset.countdown) - now) / 1000));
        const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
        el.textContent = left === 0 ? "ended" : (h ? h + "h " : "") + m + "m " + String(s).padStart(2, "0") + "s";
      });
    };
    tick();
    setInterval(tick, 1000);
  });
})();
