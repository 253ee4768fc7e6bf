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

  // A swap that replaced the focused element (a queue card after Approve or Deny) would leave focus on
  // the page itself, and the next Tab at the skip link: focus goes to what replaced it — its message
  // (read out), else the new element — so the person carries on from where they were. htmx itself keeps
  // focus on an element with an id that the swap brings back (the live page's links).
  let swapHadFocus = false;
  document.addEventListener("htmx:beforeSwap", function (event) {
    const target = event.detail && event.detail.target;
    const active = document.activeElement;
    swapHadFocus = Boolean(target && active && active !== document.body && target.contains(active));
  });
  const focusWhatReplaced = function (target) {
    const active = document.activeElement;
    if (!swapHadFocus || (active && active !== document.body && active.isConnected)) return;
    const replacement = target && target.id ? document.getElementById(target.id) : null;
    if (!replacement) return;
    const message = replacement.querySelector(".message, [role=status], [role=alert]");
    const focusable = message || replacement;
    if (!focusable.hasAttribute("tabindex")) focusable.setAttribute("tabindex", "-1");
    focusable.focus();
  };

  // A status that a refresh replaces (data-announce="ID": an evidence pack's) is read out through the
  // live region ID when its text changes, not every time the part around it is replaced.
  const announceChanges = function () {
    document.querySelectorAll("[data-announce]").forEach(function (status) {
      const region = document.getElementById(status.dataset.announce);
      const text = status.textContent.trim();
      if (!region || region.dataset.last === text) return;
      if (region.dataset.last !== undefined) region.textContent = text;
      region.dataset.last = text;
    });
  };

  document.addEventListener("htmx:afterSwap", function (event) {
    const detail = event.detail || {};
    focusFirstError(detail.elt || document);
    focusWhatReplaced(detail.target);
    announceChanges();
  });

  // A refresh that can be held (the live page, WCAG 2.2.2): a button data-pause="ID" pauses the polling
  // of the element with that id until pressed again (its text says which it will do).
  const setUpPausing = function () {
    document.querySelectorAll("[data-pause]").forEach(function (button) {
      const target = document.getElementById(button.dataset.pause);
      if (!target) return;
      button.hidden = false;
      button.addEventListener("click", function () {
        const paused = target.dataset.paused !== "true";
        target.dataset.paused = paused ? "true" : "";
        button.textContent = paused ? "Resume updates" : "Pause updates";
      });
    });
  };
  document.addEventListener("htmx:beforeRequest", function (event) {
    const elt = event.detail && event.detail.elt;
    if (elt && elt.dataset && elt.dataset.paused === "true") event.preventDefault();
  });

  // Copy and download buttons for secrets shown once (a new API token, backup codes): hidden without
  // this file, since they need it.
  const textOf = function (selector) {
    const source = document.querySelector(selector);
    if (!source) return "";
    const items = source.querySelectorAll("li");
    return items.length
      ? Array.prototype.map.call(items, function (li) { return li.textContent.trim(); }).join("\n") + "\n"
      : source.textContent.trim();
  };
  const say = function (button, text) {
    const status = button.parentElement.querySelector("[data-copy-status]");
    if (status) status.textContent = text;
  };
  const setUpCopying = function () {
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      if (!navigator.clipboard) return;
      button.hidden = false;
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(textOf(button.dataset.copy)).then(
          function () { say(button, "Copied."); },
          function () { say(button, "Could not copy: select the text and copy it."); }
        );
      });
    });
    document.querySelectorAll("[data-download]").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () {
        const blob = new Blob([textOf(button.dataset.download)], { type: "text/plain" });
        const link = document.createElement("a");
        link.href = URL.createObjectURL(blob);
        link.download = button.dataset.filename || "accessgov.txt";
        document.body.appendChild(link);
        link.click();
        link.remove();
        setTimeout(function () { URL.revokeObjectURL(link.href); }, 1000);
        say(button, "Downloaded.");
      });
    });
  };

  // What was typed into a form sent after the session ended (accessgov/drafts.py): the server kept it,
  // and the form that posts to the same address gets it back — filled in, not sent.
  const refillKeptDraft = function () {
    const kept = document.body.dataset.keptDraft;
    if (!kept) return;
    let draft;
    try { draft = JSON.parse(kept); } catch (error) { return; }
    const form = Array.prototype.find.call(document.forms, function (f) {
      return f.method.toLowerCase() === "post" && new URL(f.action, location.href).pathname === draft.action;
    });
    if (!form) return;
    let first = null;
    Object.keys(draft.fields || {}).forEach(function (name) {
      const values = draft.fields[name];
      Array.prototype.forEach.call(form.elements, function (el) {
        if (el.name !== name || el.type === "hidden" || el.type === "password") return;
        if (el.type === "checkbox" || el.type === "radio") {
          el.checked = values.indexOf(el.value) !== -1;
        } else if (el.tagName === "SELECT") {
          Array.prototype.forEach.call(el.options, function (o) { o.selected = values.indexOf(o.value) !== -1; });
        } else {
          el.value = values[0];
        }
        first = first || el;
      });
    });
    if (!first) return;
    const note = document.createElement("p");
    note.className = "message message-info";
    note.setAttribute("role", "status");
    note.textContent = "What you typed before your session ended is filled in again. Check it, then send it.";
    form.insertBefore(note, form.firstChild);
    first.focus();
  };

  // The request form: the chosen role's policy right under its field (the table beside the form is far
  // below on a phone). Each role's line is in the page, hidden; the server shows the one already chosen.
  const showRolePolicy = function () {
    const select = document.querySelector("select[name=role][data-role-policies]");
    if (!select) return;
    const show = function () {
      document.querySelectorAll("[data-role-policy]").forEach(function (line) {
        line.hidden = line.dataset.rolePolicy !== select.value;
      });
    };
    select.addEventListener("change", show);
    show();
  };

  // The main navigation is a <details>, closed in the page: wide screens show its content through CSS
  // (::details-content), which browsers before 2025 (Firefox ESR 140 among them) do not know — there it is
  // opened on wide screens, and closed again when the window narrows to the phone's "Menu".
  // Its "More" is the other way round: a drop-down on wide screens, part of the list on phones (opened there for
  // the same browsers). Whichever of the two drops down over the page closes with Escape (focus back on its
  // summary) and when a click or the focus goes elsewhere, as a menu does.
  const setUpMenus = function () {
    const menu = document.querySelector("details.navmenu");
    if (!menu || !window.matchMedia) return;
    const more = menu.querySelector("details.navmore");
    const phone = window.matchMedia("(max-width: 640px)");
    const sync = function () {
      menu.open = !phone.matches;
      if (more) more.open = phone.matches;
    };
    sync();
    if (phone.addEventListener) phone.addEventListener("change", sync);
    const dropDown = function () { return phone.matches ? menu : more; };
    const closeUnless = function (inside) {
      const open = dropDown();
      if (open && open.open && !open.contains(inside)) open.open = false;
    };
    document.addEventListener("click", function (event) { closeUnless(event.target); });
    document.addEventListener("focusin", function (event) { closeUnless(event.target); });
    document.addEventListener("keydown", function (event) {
      const open = dropDown();
      if (event.key !== "Escape" || !open || !open.open || !open.contains(document.activeElement)) return;
      open.open = false;
      open.querySelector("summary").focus();
    });
    // A drop-down near the right edge (the menu wrapped on a narrow screen) opens towards the left.
    if (more) {
      const panel = more.querySelector(".navmore-panel");
      more.addEventListener("toggle", function () {
        if (!more.open || !panel || phone.matches) return;
        panel.classList.remove("navmore-end");
        panel.classList.toggle("navmore-end", panel.getBoundingClientRect().right > document.documentElement.clientWidth);
      });
    }
  };

  // Before the idle timeout signs the person out (WCAG 2.2.1): a warning two minutes ahead (half the timeout
  // when it is shorter than four), with "Stay signed in" — a POST that restarts the server's idle clock. What
  // the person does counts (a page, a form, an htmx action), in any of their tabs (the last activity is shared
  // through localStorage); a refresh that polls by itself (hx-trigger "every", sent with X-AccessGov-Poll,
  // which the server does not count either) does not. The server notes activity to within a sixtieth of the
  // timeout (at most 30 s), so the countdown here is that much shorter.
  const POLL = function (elt) { return Boolean(elt && elt.closest && elt.closest("[data-poll]")); };
  const setUpIdleWarning = function () {
    const idle = Number(document.body.dataset.idleSeconds || 0);
    const dialog = document.getElementById("idle-warning");
    if (!idle || !dialog) return;
    const stay = dialog.querySelector("[data-idle-stay]");
    const text = dialog.querySelector("[data-idle-text]");
    const effective = idle - Math.min(30, idle / 60);
    const ahead = Math.min(120, effective / 2);
    const KEY = "accessgov:last-activity";
    let warnTimer = null, endTimer = null, ended = false, before = null;
    const share = function (at) { try { localStorage.setItem(KEY, String(at)); } catch (error) { /* private mode */ } };
    const schedule = function (at) {
      if (ended) return;
      clearTimeout(warnTimer); clearTimeout(endTimer);
      if (!dialog.hidden) {
        dialog.hidden = true;
        if (before && before.isConnected && document.activeElement === stay) before.focus();
      }
      const left = at + effective * 1000 - Date.now();
      // Ended: once the server's whole timeout has passed since this activity (the server noted it no later).
      const gone = at + idle * 1000 + 500 - Date.now();
      warnTimer = setTimeout(function () {
        text.textContent = "You will be signed out in about " + Math.max(1, Math.round(ahead / 60)) +
          " minute" + (ahead >= 90 ? "s" : "") + " because nothing happened for a while.";
        stay.textContent = "Stay signed in";
        before = document.activeElement;
        dialog.hidden = false;
        stay.focus();
      }, Math.max(0, left - ahead * 1000));
      endTimer = setTimeout(function () {
        ended = true;
        // Refreshes stop: they would bring the sign-in page into the page.
        document.querySelectorAll("[data-poll]").forEach(function (elt) { elt.dataset.paused = "true"; });
        text.textContent = "Your session has most likely ended because nothing happened for a while. " +
          (typedForm() ? "Send your form as usual: what you typed is kept and filled in again after you sign in. " : "") +
          "Or sign in again now.";
        stay.textContent = "Sign in again";
        dialog.hidden = false;
      }, Math.max(0, gone));
    };
    const active = function () { const now = Date.now(); share(now); schedule(now); };
    // The form the person was typing in, if any of its fields holds text: sent after the session ended, the
    // server keeps it for them (accessgov/drafts.py).
    const typedForm = function () {
      const form = before && before.form;
      if (!form || form.method.toLowerCase() !== "post") return null;
      return Array.prototype.some.call(form.elements, function (el) {
        return (el.tagName === "TEXTAREA" || (el.tagName === "INPUT" && /^(text|search|number|)$/.test(el.type))) &&
          el.value.trim() !== "";
      }) ? form : null;
    };
    stay.addEventListener("click", function () {
      if (ended) { location.assign(location.href); return; }  // a GET: never a form sent again
      const csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
      fetch(document.body.dataset.keepAliveUrl, {
        method: "POST", credentials: "same-origin", redirect: "manual", headers: { "X-CSRFToken": csrf },
      }).then(function (response) {
        if (response.status === 204) { active(); return; }
        ended = true;
        text.textContent = "Your session has ended. " +
          (typedForm() ? "Send your form as usual: what you typed is kept and filled in again after you sign in. " : "") +
          "Or sign in again now.";
        stay.textContent = "Sign in again";
      }, function () {
        text.textContent = "The portal could not be reached. Check your connection and try again.";
      });
    });
    document.addEventListener("htmx:afterRequest", function (event) {
      if (!POLL(event.detail && event.detail.elt)) active();
    });
    window.addEventListener("storage", function (event) {
      if (event.key === KEY && event.newValue) schedule(Number(event.newValue));
    });
    active();
  };

  document.addEventListener("DOMContentLoaded", function () {
    setUpMenus();
    setUpIdleWarning();
    setUpPausing();
    announceChanges();
    focusFirstError(document);
    setUpCopying();
    refillKeptDraft();

    showRolePolicy();

    // Live countdowns: <time data-countdown="ISO-8601">…</time>. At zero the line says the access
    // ended and the card's Release/Extend actions go away (the server no longer offers them either).
    // Looked up on every tick: a part of the page htmx swaps in (the live page every 10 s) counts down too,
    // also on a page that had none when it loaded.
    const tick = function () {
      const now = Date.now();
      document.querySelectorAll("[data-countdown]").forEach(function (el) {
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
