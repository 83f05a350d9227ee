// imstatus dashboard: one card per account, kept up to date from /v1/events (Server-Sent
// Events). Every message is one event JSON (design §1); the page folds the events into the
// last snapshot exactly like Snapshot::apply in imstatus-core. No framework, no build step.
// An account with an activity (the desktop source: microphone, camera, idle, screen lock)
// also gets those four rows and, while on a call, an "on a call" mark.
//
// On a lost connection it shows "reconnecting…", closes the EventSource and opens a fresh one
// (without Last-Event-ID: a fresh stream always begins with snapshots, so the page never has
// to trust a replay), with a backoff of 0.5 s doubling up to 5 s; once connected again it
// shows a "reconnected" note.
"use strict";

(function () {
  const cardsEl = document.getElementById("cards");
  const emptyEl = document.getElementById("empty");
  const connEl = document.getElementById("conn");
  const noteEl = document.getElementById("note");

  const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
  const accounts = new Map(); // name -> { state, card }

  let source = null;
  let everOpen = false;
  let lost = false;
  let delay = 500;
  let retryTimer = null;
  let noteTimer = null;

  const LABEL = {
    not_running: "not running",
    starting: "starting",
    running: "running",
    signed_out: "signed out",
    signing_in: "signing in…",
    signed_in: "signed in",
    signing_out: "signing out…",
    extended_away: "extended away",
    unknown: "unknown",
  };
  const label = (v) => (v == null ? "unknown" : LABEL[v] || String(v).replace(/_/g, " "));

  function setConn(state, text) {
    connEl.dataset.state = state;
    document.body.dataset.conn = state;
    connEl.textContent = text;
  }

  function showNote(text, kind, ms) {
    clearTimeout(noteTimer);
    noteEl.textContent = text;
    noteEl.dataset.kind = kind;
    noteEl.hidden = false;
    if (ms) {
      noteTimer = setTimeout(() => { noteEl.hidden = true; }, ms);
    }
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  function emptyState() {
    return {
      source: "", seq: 0, time: null, client: "unknown", session: "unknown",
      availability: "unknown", message: null, resources: [], contacts: [], error: null,
      activity: null, activityTime: null,
    };
  }

  function upsert(list, key, name, item) {
    const i = list.findIndex((x) => x[key] === name);
    if (item == null) {
      if (i >= 0) list.splice(i, 1);
      return;
    }
    if (i >= 0) list[i] = item; else list.push(item);
    list.sort((a, b) => (a[key] < b[key] ? -1 : a[key] > b[key] ? 1 : 0));
  }

  // Folds one event into an account's state (mirrors Snapshot::apply).
  function apply(s, ev) {
    s.seq = Math.max(s.seq, ev.seq || 0);
    s.time = ev.time || s.time;
    if (ev.source) s.source = ev.source;
    switch (ev.event) {
      case "snapshot":
        s.client = ev.client;
        s.session = ev.session;
        s.availability = ev.availability;
        s.message = ev.message || null;
        s.resources = Array.isArray(ev.resources) ? ev.resources.slice() : [];
        s.contacts = Array.isArray(ev.contacts) ? ev.contacts.slice() : [];
        s.error = ev.source_error ? ev.source_error.code + ": " + ev.source_error.detail : null;
        s.resync = !!ev.resync;
        s.activity = ev.activity || null;
        s.activityTime = ev.time || null;
        break;
      case "client_starting": s.client = "starting"; break;
      case "client_started": s.client = "running"; break;
      case "client_shutdown": s.client = "not_running"; break;
      case "signing_in": s.session = "signing_in"; break;
      case "signed_in":
        if (ev.result === "ok") {
          s.session = "signed_in";
          s.error = null;
        } else {
          s.session = "signed_out";
          s.error = "sign-in failed: " + ev.result;
        }
        break;
      case "signing_out": s.session = "signing_out"; break;
      case "signed_out": s.session = "signed_out"; break;
      case "status_changed":
        if (ev.to) {
          s.availability = ev.to.availability;
          s.message = ev.to.message || null;
        }
        break;
      case "resource_changed":
        upsert(s.resources, "resource", ev.resource, ev.to || null);
        break;
      case "contact_status_changed":
        if (ev.to) {
          upsert(s.contacts, "contact", ev.contact, {
            contact: ev.contact, availability: ev.to.availability, message: ev.to.message || null,
          });
        }
        break;
      case "activity_changed":
        s.activity = ev.to || null;
        s.activityTime = ev.time || null;
        break;
      case "source_error":
        s.error = ev.code + ": " + ev.detail;
        if (ev.session_unknown) s.session = "unknown";
        break;
      default:
        break; // a newer gateway's event: ignore
    }
  }

  function makeCard(name) {
    const card = el("article", "card");
    card.dataset.account = name;
    const head = el("div", "card-head");
    const call = el("span", "call", "on a call");
    call.hidden = true;
    head.append(el("h2", "name", name), call, el("span", "source"));
    const avail = el("div", "avail");
    const message = el("p", "message");
    const axes = el("dl", "axes");
    for (const axis of ["client", "session"]) {
      axes.append(el("dt", null, axis), el("dd", axis));
    }
    const activity = el("dl", "activity");
    for (const [signal, text] of [
      ["microphone", "microphone"], ["camera", "camera"], ["idle", "input"], ["locked", "screen"],
    ]) {
      activity.append(el("dt", null, text), el("dd", signal));
    }
    activity.hidden = true;
    const error = el("p", "error");
    error.hidden = true;
    const res = el("section", "resources");
    res.append(el("h3", null, "Resources"), el("ul", "list"));
    const contacts = el("details", "contacts");
    contacts.append(el("summary"), el("ul", "list"));
    const meta = el("div", "meta");
    card.append(head, avail, message, axes, activity, error, res, contacts, meta);
    return card;
  }

  function fillList(ul, items, key, empty) {
    ul.replaceChildren();
    if (!items.length) {
      ul.append(el("li", "none", empty));
      return;
    }
    for (const item of items) {
      const li = el("li");
      li.dataset.name = item[key];
      li.dataset.availability = item.availability;
      let state = label(item.availability);
      if (item.priority != null) state += " · prio " + item.priority;
      const nameEl = el("span", "name", item[key]);
      li.append(nameEl, el("span", "state", state));
      if (item.message) nameEl.append(el("span", "message", " “" + item.message + "”"));
      ul.append(li);
    }
  }

  // "parecord (4242), firefox": who uses a device, as the sound server or /proc names them.
  function appsText(apps) {
    if (!Array.isArray(apps)) return "";
    return apps
      .map((a) => String(a && a.name) + (a && a.pid != null ? " (" + a.pid + ")" : ""))
      .join(", ");
  }

  function setSignal(dd, on, text) {
    dd.dataset.on = on ? "true" : "false";
    dd.textContent = text;
  }

  // The activity rows; idle_s is as of the event's time, so "idle since" is a fixed clock time
  // that needs no ticking.
  function renderActivity(c, s) {
    const box = c.querySelector(".activity");
    const a = s.activity;
    box.hidden = !a;
    c.querySelector(".call").hidden = !(a && a.in_call);
    if (!a) {
      delete c.dataset.inCall;
      return;
    }
    c.dataset.inCall = a.in_call ? "true" : "false";
    const device = (on, apps) => {
      if (!on) return "off";
      const who = appsText(apps);
      return who ? "in use · " + who : "in use";
    };
    setSignal(box.querySelector("dd.microphone"), a.microphone, device(a.microphone, a.microphone_apps));
    setSignal(box.querySelector("dd.camera"), a.camera, device(a.camera, a.camera_apps));
    let idle = "active";
    if (a.idle) {
      idle = "idle";
      const at = Date.parse(s.activityTime);
      if (typeof a.idle_s === "number" && !Number.isNaN(at)) {
        idle += " since " + new Date(at - a.idle_s * 1000).toLocaleTimeString();
      }
    }
    setSignal(box.querySelector("dd.idle"), a.idle, idle);
    setSignal(box.querySelector("dd.locked"), a.locked, a.locked ? "locked" : "unlocked");
  }

  // An account with an activity but no IM status (the desktop source) is headed by what the
  // desktop does, as its badge says: on a call, locked, idle or active.
  function deskState(s) {
    const a = s.activity;
    if (!a || s.client === "not_running") return null;
    if (a.in_call) return "on a call";
    if (s.session !== "unknown" || s.availability !== "unknown") return null;
    return a.locked ? "locked" : a.idle ? "idle" : "active";
  }

  function render(name) {
    const entry = accounts.get(name);
    const s = entry.state;
    const c = entry.card;
    c.dataset.client = s.client;
    c.dataset.session = s.session;
    c.dataset.availability = s.availability;
    c.dataset.seq = String(s.seq);
    c.querySelector(".source").textContent = s.source;
    const desk = deskState(s);
    if (desk) c.dataset.desk = desk; else delete c.dataset.desk;
    c.querySelector(".avail").textContent = desk || label(s.availability);
    c.querySelector(".message").textContent = s.message || "";
    c.querySelector("dd.client").textContent = label(s.client);
    c.querySelector("dd.session").textContent = label(s.session);
    const err = c.querySelector(".error");
    err.hidden = !s.error;
    err.textContent = s.error ? "source error — " + s.error : "";
    renderActivity(c, s);
    fillList(c.querySelector(".resources ul"), s.resources, "resource", "no resources");
    // A desktop account has no resources to list.
    c.querySelector(".resources").hidden = !!s.activity && s.resources.length === 0;
    const contacts = c.querySelector(".contacts");
    contacts.hidden = s.contacts.length === 0;
    if (!entry.contactsShown && s.contacts.length > 0) {
      // Short rosters start open; long ones stay folded.
      entry.contactsShown = true;
      contacts.open = s.contacts.length <= 8;
    }
    contacts.querySelector("summary").textContent = "Contacts (" + s.contacts.length + ")";
    fillList(contacts.querySelector("ul"), s.contacts, "contact", "no contacts");
    const when = s.time ? new Date(s.time).toLocaleTimeString() : "";
    // The seq stays in data-seq for scripts; people get the time of the last change.
    c.querySelector(".meta").textContent = when ? "updated " + when : "";
  }

  function handle(ev) {
    if (!ev || typeof ev.account !== "string") return;
    let entry = accounts.get(ev.account);
    if (!entry) {
      entry = { state: emptyState(), card: makeCard(ev.account) };
      accounts.set(ev.account, entry);
      cardsEl.append(entry.card);
      emptyEl.hidden = true;
    }
    entry.fresh = true;
    apply(entry.state, ev);
    render(ev.account);
  }

  function authHeaders() {
    return token ? { Authorization: "Bearer " + token } : {};
  }

  // After a (re)connect, drop cards of accounts the gateway no longer has.
  function prune() {
    fetch("/v1/accounts", { headers: authHeaders(), cache: "no-store" })
      .then((r) => (r.ok ? r.json() : null))
      .then((list) => {
        if (!Array.isArray(list)) return;
        const names = new Set(list.map((s) => s.account));
        for (const [name, entry] of accounts) {
          if (!names.has(name)) {
            entry.card.remove();
            accounts.delete(name);
          }
        }
        emptyEl.hidden = accounts.size > 0;
      })
      .catch(() => {});
  }

  // Why did the stream fail? EventSource cannot tell a 401 from a dead server.
  function diagnose() {
    fetch("/v1/accounts", { headers: authHeaders(), cache: "no-store" })
      .then((r) => {
        if (r.status === 401 || r.status === 403) {
          setConn("denied", "access denied");
          showNote(
            token
              ? "The token was refused. Open this page as /#token=<a valid token>."
              : "This gateway needs a token. Open this page as /#token=<your token>.",
            "error",
          );
        }
      })
      .catch(() => {});
  }

  function connect() {
    retryTimer = null;
    const url = "/v1/events" + (token ? "?access_token=" + encodeURIComponent(token) : "");
    const es = new EventSource(url);
    source = es;
    es.onopen = () => {
      if (source !== es) return;
      delay = 500;
      setConn("live", "live");
      if (lost) {
        lost = false;
        showNote("reconnected at " + new Date().toLocaleTimeString(), "ok", 30000);
        prune();
      }
      everOpen = true;
    };
    es.onmessage = (m) => {
      if (source !== es) return;
      let ev;
      try {
        ev = JSON.parse(m.data);
      } catch (e) {
        return;
      }
      handle(ev);
    };
    es.onerror = () => {
      if (source !== es) return;
      es.close();
      source = null;
      if (everOpen) {
        lost = true;
        setConn("reconnecting", "reconnecting…");
        showNote("Connection lost; reconnecting…", "warn");
      } else {
        setConn("connecting", "connecting…");
      }
      diagnose();
      if (!retryTimer) {
        retryTimer = setTimeout(connect, delay);
        delay = Math.min(delay * 2, 5000);
      }
    };
  }

  connect();
})();
