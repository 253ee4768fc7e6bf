// AccessGov progressive enhancements. Every page works without this file.
(function () {
  "use strict";

  // Focus the first field with an error (aria-invalid), on load and after an htmx swap, unless the
  // person is already typing somewhere (autofocus does the same for plain pages without this file).
  const focusFirstError = function (root) {
    const field = (root || document).querySelector('[aria-invalid="true"]');
    if (!field) return;
    const active = document.activeElement;
    if (active && active !== document.body && active.getAttribute("aria-invalid") === "true") return;
    field.focus();
  };

  document.addEventListener("htmx:afterSwap", function (event) {
    focusFirstError(event.detail && event.detail.elt ? event.detail.elt : document);
  });

  document.addEventListener("DOMContentLoaded", function () {
    focusFirstError(document);

    // Live countdowns: <time data-countdown="ISO-8601">…</time>. At zero the line says the access
    // ended and the card's Release/Extend actions go away (the server no longer offers them either).
    const timers = document.querySelectorAll("[data-countdown]");
    if (!timers.length) return;
    const tick = function () {
      const now = Date.now();
      timers.forEach(function (el) {
        const left = Math.max(0, Math.floor((Date.parse(el.dataset.countdown) - now) / 1000));
        if (left === 0) {
          if (!el.isConnected) return;
          const card = el.closest(".grant-card, .panel");
          const actions = card ? card.querySelector("[data-ends-with-countdown]") : null;
          if (actions) actions.hidden = true;
          const line = el.closest("[data-countdown-line]");
          if (line) {
            line.textContent = "Ended.";
          } else {
            el.textContent = "ended";
          }
          return;
        }
        const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
        el.textContent = (h ? h + "h " : "") + m + "m " + String(s).padStart(2, "0") + "s";
      });
    };
    tick();
    setInterval(tick, 1000);
  });
})();
