// The dashboard page: connects to the broker over WebSocket with the official NATS
// client, joins one session (or lists them), and draws at most a few times a
// second whatever the frame rate.
//
// Join (docs/PROTOCOL.md, "Live: dashboards"): subscribe to session.<id>.> first,
// then request sessions.get.<id> on the same connection, so no frame falls in
// between. After a reconnect the subscription is restored by the client and the
// page takes a fresh snapshot and re-reads the lap history by itself.
//
// Everything from the wire is shown with textContent, never as markup.

import { wsconnect, jwtAuthenticator } from "./nats.js";
import uPlot from "./uplot.js";
import qrcode from "./qrcode.js";
import * as view from "./view.js";

const DRAW_EVERY_MS = 250;
const REQUEST_TIMEOUT_MS = 5000;
const STRATEGY_EVERY_MS = 5000;

const $ = (id) => document.getElementById(id);

const state = {
  telemetry: null,
  setup: null,
  setupAt: null,
  lastFrameAt: null, // Date.now() of the latest frame
  laps: [], // lap rows, oldest first (view.lapRow)
  lapsChanged: true,
  ended: null,
  endedAs: null, // the link pill's word for why: "ended", "withdrawn"
  strategy: null, // the document's fuel to the finish
  stints: [], // sessions.stints
  alerts: new Map(), // kind → active alert
  stintsChanged: false,
  // The live delta: the best lap's trace (view.referenceOf), fetched once per
  // new best lap; each frame is read against it here, nothing per frame on
  // the processor.
  reference: null,
  referenceNote: "no reference lap yet",
  referenceAskedFor: null, // the best lap time last asked for
  delta: null,
  // The Timing view: the latest field (every car on track), when it arrived
  // (Date.now()), and a count of live fields so a snapshot older than one
  // that came live is not taken over it.
  field: null,
  fieldAt: null,
  fieldSeq: 0,
  fieldChanged: true,
  // Where a stop now rejoins (the document's `rejoin`, worked out on the server).
  rejoin: null,
  // When the session's first frame arrived (Date.now()): how long it has sent
  // telemetry without a field.
  firstFrameAt: null,
};

let staleAfterMs = 5000;

/// A per-session link's credentials (from the fragment), kept fresh while the
/// session lives: they are short-lived, so an ended session's links stop working.
/// A team link's (`team` in the fragment) are the team's; on a car page opened
/// from it the connection holds that car's, asked for with the team's, and the
/// fragment keeps the team's for the way back (`teamJwt`, `teamSeed`).
/// A link made by `paddock sessions share` has an id (`link` in the fragment):
/// it renews on `sessions.renew.link.<link>`, which the team can withdraw
/// (`paddock sessions revoke`; docs/SECURITY.md "Taking a link back").
const access = {
  jwt: null, seed: null, inbox: null, team: null, teamJwt: null, teamSeed: null, link: null,
};

/// What the page says once the team withdrew its link.
const WITHDRAWN = "This link was withdrawn by the team: it no longer shows anything. " +
  "Ask the team for a new one.";

main().catch((e) => problem(`The page could not start: ${e.message || e}`));

async function main() {
  const config = await (await fetch("/config.json", { cache: "no-cache" })).json();
  const params = new URLSearchParams(location.search);
  const stale = Number(params.get("stale") ?? config.stale_after_s ?? 5);
  if (stale > 0) staleAfterMs = stale * 1000;

  // Credentials of a per-session link travel in the fragment, which the browser
  // never sends to the server; they stay in this page's memory.
  const fragment = new URLSearchParams(location.hash.slice(1));
  const jwt = fragment.get("jwt");
  const seed = fragment.get("seed");
  const inbox = fragment.get("inbox");
  const linkTeam = fragment.get("team");
  const linkId = fragment.get("link");

  const match = location.pathname.match(/^\/session\/([0-9a-fA-F-]{36})\/?$/);
  const id = match ? match[1].toLowerCase() : null;
  const teamMatch = location.pathname.match(/^\/team\/([^/]+)\/?$/);
  const team = teamMatch ? decodeURIComponent(teamMatch[1]) : null;

  if (!config.ws_url) {
    setLink("refused", "no broker configured");
    problem("This paddock server was started without --ws-url: it does not know where the " +
      "broker's WebSocket listener is.");
    return;
  }
  const options = {
    servers: config.ws_url,
    name: id ? `paddock-dashboard ${id}` : "paddock-dashboard",
    waitOnFirstConnect: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1000,
    // The cluster's other nodes are announced with nats:// URLs a browser cannot use.
    ignoreClusterUpdates: true,
  };
  // Each (re)connect signs with the credentials held then: renewal replaces them.
  if (jwt && seed) {
    access.jwt = jwt;
    access.seed = seed;
    access.inbox = inbox;
    access.link = linkId;
    if (linkTeam) {
      access.team = linkTeam;
      access.teamJwt = jwt;
      access.teamSeed = seed;
    }
    options.authenticator = (nonce) =>
      jwtAuthenticator(access.jwt, new TextEncoder().encode(access.seed))(nonce);
  }
  if (inbox) options.inboxPrefix = inbox;

  setLink("connecting");
  // The first connection is retried without end, so a broker with no
  // WebSocket listener would leave the page saying "connecting" and nothing
  // more: after a few seconds it says where it is trying, and what is missing.
  const slow = setTimeout(() => problem(
    `No answer yet from the broker's WebSocket listener at ${config.ws_url} (still trying). ` +
    "A broker without one (no websocket block in its configuration) serves the terminal " +
    "views but not this page; the shipped nats.conf has one."), 5000);
  let nc;
  try {
    nc = await wsconnect(options);
    clearTimeout(slow);
    clearProblem();
  } catch (e) {
    clearTimeout(slow);
    setLink("refused", "refused");
    if (access.jwt && expiresAt(access.jwt) !== null && expiresAt(access.jwt) <= Date.now()) {
      problem("This link has expired: a session's links work for a limited time after they " +
        "are made, and as long as a page keeps them open. Ask for a new one " +
        "(paddock sessions share <id>).");
    } else {
      problem(`The broker refused the connection: ${e.message || e}`);
    }
    return;
  }
  if (id && access.team) {
    // A car page opened from a team link: the car's credentials, then the
    // same connection signs in with them.
    try {
      await teamCredentials(nc, id);
      await reconnected(nc);
    } catch (e) {
      if (e.code === 403) return withdrawn(nc, e);
      setLink("refused", "not allowed");
      problem(e.code === 404
        ? `This team link (team ${access.team}) does not show session ${id}: it is another ` +
          "team's car, or it has ended."
        : `The car's credentials could not be had with this team link: ${e.message || e}`);
      return;
    }
  }
  if (id) {
    await session(nc, id);
  } else if (team !== null) {
    await tower(nc, team);
  } else {
    await list(nc);
  }
}

// ---------------------------------------------------------------------------
// One team: every car in a row, by position (the pit wall)

/// The team's cars from the processors' tower feed (`team.<token>.tower`,
/// docs/PROTOCOL.md "The pit wall"): one small message per processor a few
/// times a second, whatever the cars' frame rates, so a phone draws 30 cars at
/// 20 Hz as cheaply as one. Each message lists the cars its processor holds; a
/// car missing from its processor's next message has ended.
async function tower(nc, team) {
  $("team-view").hidden = false;
  $("team-name").textContent = `Team ${team}`;
  document.title = `paddock · ${team}`;
  $("team-note").textContent = "waiting for the team's cars…";
  const cars = new Map(); // session id → { row, processor, received, ended }
  const byProcessor = new Map(); // processor → Set of its cars' ids
  let heard = false;
  nc.subscribe(teamSubject(team), {
    callback: (err, msg) => {
      if (err) {
        if (isPermission(err)) {
          setLink("refused", "not allowed");
          problem(`The broker refused access to team ${team}: this link's credentials are ` +
            "for another team, or have expired.");
        }
        return;
      }
      let doc;
      try {
        doc = msg.json();
      } catch {
        return;
      }
      if (!doc || !Array.isArray(doc.cars) || typeof doc.processor !== "string") return;
      heard = true;
      const now = Date.now();
      const listed = new Set();
      for (const row of doc.cars) {
        if (!row || typeof row.session_id !== "string") continue;
        listed.add(row.session_id);
        cars.set(row.session_id, { row, processor: doc.processor, received: now, ended: false });
      }
      for (const id of byProcessor.get(doc.processor) || []) {
        const car = cars.get(id);
        if (!listed.has(id) && car && car.processor === doc.processor) car.ended = true;
      }
      byProcessor.set(doc.processor, listed);
    },
  });
  setLink("live");
  const draw = () => {
    if (heard) drawTower(cars);
  };
  setInterval(draw, 1000);
  // The first message is at most one tick away: draw it as soon as it comes.
  const first = setInterval(() => {
    if (heard) {
      clearInterval(first);
      draw();
    }
  }, 100);
  // The client restores the subscription on a reconnect: nothing to ask again.
  watchStatus(nc, () => setLink("live"));
  if (access.team) keepFresh(nc, null);
}

/// The team label as one subject token, as the processor writes it
/// (protocol::subjects::team_token): bytes other than ASCII letters, digits,
/// `-` and `_` as `%XX`.
function teamToken(team) {
  let token = "";
  for (const b of new TextEncoder().encode(team)) {
    const c = String.fromCharCode(b);
    token += /[A-Za-z0-9_-]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return token;
}

/// `team.<token>.tower`.
function teamSubject(team) {
  return `team.${teamToken(team)}.tower`;
}

function drawTower(cars) {
  const now = Date.now();
  const n = (row, k) => (typeof row[k] === "number" && Number.isFinite(row[k]) ? row[k] : null);
  const position = (row) => {
    const p = n(row, "position");
    return p !== null && p > 0 ? p : Infinity;
  };
  // By position; cars level on it (or without one) by their label.
  const label = (row) => (typeof row.car === "string" ? row.car : "");
  const entries = [...cars.entries()].sort((a, b) =>
    position(a[1].row) - position(b[1].row) || label(a[1].row).localeCompare(label(b[1].row)));
  const rows = entries.map(([id, car]) => {
    const { row } = car;
    const tr = document.createElement("tr");
    // The frame's age as of the message, plus the time since: a processor gone
    // quiet makes its cars STALE too.
    const age = n(row, "frame_age_s");
    const since = (now - car.received) / 1000;
    const state = car.ended ? "ENDED"
      : age === null || (age + since) * 1000 > staleAfterMs ? "STALE" : "LIVE";
    tr.dataset.state = state;
    tr.dataset.session = id;
    const alerts = Array.isArray(row.alerts)
      ? row.alerts.filter((a) => a && typeof a.message === "string") : [];
    if (alerts.length) tr.dataset.alert = "";
    const a = document.createElement("a");
    a.href = `/session/${encodeURIComponent(id)}${access.jwt ? linkFragment() : ""}`;
    a.textContent = typeof row.car === "string" ? row.car : id.slice(0, 8);
    const pos = position(row);
    const fuel = n(row, "fuel");
    const fuelLaps = n(row, "fuel_laps");
    const gap = n(row, "gap_ahead");
    const tyres = [
      typeof row.tyre_compound === "string" ? row.tyre_compound : null,
      n(row, "tyre_age_laps") !== null ? view.laps(n(row, "tyre_age_laps")) : null,
    ].filter((x) => x !== null).join(" · ");
    const stintLaps = n(row, "stint_laps");
    const cells = [
      Number.isFinite(pos) ? `P${pos}` : view.DASH,
      a,
      typeof row.driver === "string" ? row.driver : view.DASH,
      n(row, "lap") ?? view.DASH,
      gap === null ? view.DASH : pos === 1 ? "leader" : `+${gap.toFixed(1)}`,
      view.lapTime(n(row, "last_lap_time")),
      view.lapTime(n(row, "best_lap_time")),
      fuel === null ? view.DASH
        : `${fuel.toFixed(1)} L` + (fuelLaps === null ? "" : ` · ${fuelLaps.toFixed(1)} laps`),
      `${row.in_pits === true ? "IN · " : ""}${n(row, "pit_stops") ?? 0}`
        + view.nextStop(n(row, "next_stop_fuel") ?? n(row, "fuel_to_add"),
          n(row, "last_lap_to_stop"), n(row, "stops_needed")),
      `${view.clock(n(row, "stint_s"))}${stintLaps === null ? "" : ` · ${view.laps(stintLaps)}`}`,
      tyres || view.DASH,
      alerts.length ? `${state} · ${alerts.map((a) => a.message).join(" · ")}` : state,
    ];
    for (const cell of cells) {
      const td = document.createElement("td");
      td.append(typeof cell === "object" ? cell : String(cell));
      tr.append(td);
    }
    // From the car's field (a sim that sends one): the cars around it and
    // where a stop now rejoins, on a line of its own under the car's row,
    // which wraps on a phone rather than widen the table.
    const around = view.aroundText(row);
    if (around === null) return [tr];
    const under = document.createElement("tr");
    under.className = "around";
    under.dataset.session = id;
    under.dataset.state = state;
    const td = document.createElement("td");
    td.colSpan = cells.length;
    td.textContent = around;
    under.append(td);
    return [tr, under];
  }).flat();
  $("tower").tBodies[0].replaceChildren(...rows);
  $("team-note").textContent = `${entries.length} car${entries.length === 1 ? "" : "s"}`;
}

// ---------------------------------------------------------------------------
// One session

/// The session this page follows, for refreshes triggered by messages.
const followed = { nc: null, id: null };

async function session(nc, id) {
  followed.nc = nc;
  followed.id = id;
  $("session-view").hidden = false;
  $("csv").download = `laps-${id.slice(0, 8)}.csv`;
  // Fuel to the finish follows the tank between laps too (the processor
  // computes it from the latest frame when asked).
  setInterval(() => refreshNumbers(nc, id), STRATEGY_EVERY_MS);
  $("csv").addEventListener("click", (e) => {
    e.currentTarget.href = `data:text/csv;charset=utf-8,${encodeURIComponent(view.lapsCsv(state.laps))}`;
  });
  $("session-id").textContent = `session ${id}`;
  document.title = `paddock · ${id.slice(0, 8)}`;
  showQr();
  setupCharts();
  setupTraceView(nc, id);

  nc.subscribe(`session.${id}.>`, {
    callback: (err, msg) => {
      if (err) return refused(err, id);
      onMessage(msg.subject.slice(`session.${id}.`.length), msg);
    },
  });
  await join(nc, id);
  setInterval(tick, 500);
  watchStatus(nc, () => join(nc, id));
  if (access.jwt) keepFresh(nc, id);
}

/// Reconnects (to sign in with the credentials held now) and waits until the
/// connection is back, or 10 s: what follows asks on it at once.
async function reconnected(nc) {
  const status = nc.status();
  const back = (async () => {
    for await (const s of status) if (s.type === "reconnect") return;
  })();
  await nc.reconnect();
  await Promise.race([back, new Promise((resolve) => setTimeout(resolve, 10000))]);
  if (typeof status.stop === "function") status.stop();
}

/// When a JWT expires (ms since the epoch), or null.
function expiresAt(jwt) {
  const claims = claimsOf(jwt);
  return claims && typeof claims.exp === "number" ? claims.exp * 1000 : null;
}

function claimsOf(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return null;
  }
}

/// The JWT and seed of a `.creds` document.
function credsParts(creds) {
  const jwt = /-----BEGIN NATS USER JWT-----\s*([^\s-][^\s]*)/.exec(creds);
  const seed = /-----BEGIN USER NKEY SEED-----\s*([^\s-][^\s]*)/.exec(creds);
  if (!jwt || !seed) throw new Error("unreadable credentials");
  return { jwt: jwt[1], seed: seed[1] };
}

/// A team link's fresh credentials (`sessions.team.<team>`): the team's, for
/// this page's link; and on a car page (`id`) the car's, for the connection.
async function teamCredentials(nc, id) {
  // A link from before links had ids asks on its team's subject, and is told
  // it is no longer renewed (403 link_required).
  const subject = access.link
    ? `sessions.renew.link.${access.link}`
    : `sessions.team.${teamToken(access.team)}`;
  const team = credsParts((await ask(nc, subject)).creds);
  access.teamJwt = team.jwt;
  access.teamSeed = team.seed;
  const held = id ? credsParts((await ask(nc, subject, { session_id: id })).creds) : team;
  access.jwt = held.jwt;
  access.seed = held.seed;
}

/// This page's link with the credentials held now: what a reload, a QR code
/// or a link to the team's other pages carries.
function linkFragment() {
  const fragment = access.team
    ? { jwt: access.teamJwt, seed: access.teamSeed, inbox: access.inbox || "", team: access.team }
    : { jwt: access.jwt, seed: access.seed, inbox: access.inbox || "" };
  if (access.link) fragment.link = access.link;
  return `#${new URLSearchParams(fragment)}`;
}

/// Renews the link's credentials when two thirds of their life have passed, puts
/// the new ones in this page's own link (and its QR code), and reconnects with them.
/// `id`: the session of a car page, or null on a team page.
function keepFresh(nc, id) {
  const claims = claimsOf(access.jwt);
  if (!claims || typeof claims.exp !== "number" || typeof claims.iat !== "number") return;
  const due = (claims.iat + ((claims.exp - claims.iat) * 2) / 3) * 1000;
  setTimeout(async () => {
    try {
      if (access.team) {
        await teamCredentials(nc, id);
      } else {
        const subject = access.link
          ? `sessions.renew.link.${access.link}`
          : `sessions.renew.dashboard.${id}`;
        const renewed = credsParts((await ask(nc, subject)).creds);
        access.jwt = renewed.jwt;
        access.seed = renewed.seed;
      }
      history.replaceState(null, "", `${location.pathname}${location.search}${linkFragment()}`);
      if (id) showQr();
      await nc.reconnect();
      keepFresh(nc, id);
    } catch (e) {
      if (e.code === 403 || e.reason === "unknown_link") {
        withdrawn(nc, e);
        return;
      }
      if (e.code === 404 && id) {
        state.ended = "This session has ended: its links no longer work.";
        requestDraw();
        return;
      }
      // No processor right now: try again shortly, while the credentials work.
      setTimeout(() => keepFresh(nc, id), 5000);
    }
  }, Math.max(0, due - Date.now()));
}

let rejoinTimer = null;

/// The snapshot, then the lap history; again after every reconnect.
async function join(nc, id) {
  let doc;
  const fieldSeq = state.fieldSeq;
  try {
    doc = await ask(nc, `sessions.get.${id}`);
  } catch (e) {
    // No processor answering yet (restarting, or the broker just came back):
    // ask again shortly. A refusal or an unknown session will not change by itself.
    if (failed(e, id) && !rejoinTimer) {
      rejoinTimer = setTimeout(() => { rejoinTimer = null; join(nc, id); }, 2000);
    }
    return;
  }
  setLink("live");
  clearProblem();
  takeField(doc, fieldSeq);
  if (typeof doc.team === "string") {
    const a = $("team-link");
    a.href = `/team/${encodeURIComponent(doc.team)}${access.jwt ? linkFragment() : ""}`;
    a.textContent = `team ${doc.team}`;
    a.hidden = false;
  }
  if (doc.setup && typeof doc.setup === "object") {
    state.setup = doc.setup;
    state.setupAt = Date.parse(doc.setup_timestamp) || null;
  }
  if (doc.telemetry && typeof doc.telemetry === "object") {
    state.telemetry = doc.telemetry;
    // The frame's age from when the processor stored it, so a quiet session shows
    // STALE at once; never in the future if the clocks differ a little.
    const at = Date.parse(doc.stats && doc.stats.last_frame_at);
    state.lastFrameAt = Number.isFinite(at) ? Math.min(at, Date.now()) : Date.now();
  }
  takeNumbers(doc);
  try {
    await loadLaps(nc, id);
    await loadStints(nc, id);
  } catch (e) {
    // The session shows without its history; the next reconnect tries again.
    console.warn("lap history", e);
  }
  requestDraw();
}

/// The engineer's numbers a session document carries: fuel to the finish and
/// the active alerts.
function takeNumbers(doc) {
  state.strategy = doc.strategy && typeof doc.strategy === "object" ? doc.strategy : null;
  state.rejoin = doc.rejoin && typeof doc.rejoin === "object" ? doc.rejoin : null;
  if (Array.isArray(doc.alerts)) {
    state.alerts = new Map(doc.alerts.filter((a) => a && typeof a.kind === "string")
      .map((a) => [a.kind, a]));
  }
}

/// The snapshot's field (and its first frame's time), unless a field came
/// live since the snapshot was asked for: that one is as new or newer.
function takeField(doc, seq) {
  const first = Date.parse(doc.stats && doc.stats.first_frame_at);
  if (Number.isFinite(first)) state.firstFrameAt = Math.min(first, Date.now());
  if (seq !== state.fieldSeq) return;
  const field = view.fieldOf(doc.field);
  if (!field) return;
  state.field = field;
  const at = Date.parse(doc.field_timestamp);
  state.fieldAt = Number.isFinite(at) ? Math.min(at, Date.now()) : Date.now();
  state.fieldChanged = true;
}

/// The rejoin line follows the field: the document asked for again at most
/// once a second while fields come (they come 2 a second by default). A field
/// that came after the document was asked for asks once more, since the
/// answer may be from before it.
let rejoinPending = false;
let rejoinAskedAt = 0;
function refreshRejoin() {
  if (rejoinPending || !followed.nc) return;
  rejoinPending = true;
  setTimeout(async () => {
    rejoinAskedAt = Date.now();
    const seq = state.fieldSeq;
    try {
      takeNumbers(await ask(followed.nc, `sessions.get.${followed.id}`));
      requestDraw();
    } catch { /* the next field asks again */ }
    rejoinPending = false;
    if (state.fieldSeq !== seq) refreshRejoin();
  }, Math.max(0, rejoinAskedAt + 1000 - Date.now()));
}

async function loadStints(nc, id) {
  const reply = await ask(nc, `sessions.stints.${id}`);
  state.stints = Array.isArray(reply.stints) ? reply.stints : [];
  state.stintsChanged = true;
}

/// After each completed lap: the stints and the strategy follow it.
let numbersPending = false;
function refreshNumbers(nc, id) {
  if (numbersPending) return;
  numbersPending = true;
  setTimeout(async () => {
    numbersPending = false;
    try {
      takeNumbers(await ask(nc, `sessions.get.${id}`));
      await loadStints(nc, id);
      requestDraw();
    } catch { /* the next lap asks again */ }
  }, 200);
}

async function loadLaps(nc, id) {
  const records = [];
  let from = null;
  for (;;) {
    const body = from === null ? { limit: 1000 } : { limit: 1000, from_lap: from };
    const page = await ask(nc, `sessions.laps.${id}`, body);
    records.push(...(page.laps || []));
    if (page.next_from_lap === null || page.next_from_lap === undefined) break;
    from = page.next_from_lap;
  }
  state.laps = [];
  for (const r of records) pushLap(r);
}

function pushLap(record) {
  if (!record || typeof record !== "object") return;
  if (state.laps.some((l) => l.endedAt === record.ended_at && l.lap === record.lap)) return;
  const previous = state.laps.length ? state.laps[state.laps.length - 1] : null;
  state.laps.push(view.lapRow(record, previous));
  state.lapsChanged = true;
}

/// What a message under `session.<id>.` is, from the rest of its subject: the rule
/// of `subjects::session_message` in src/protocol/subjects.rs, which this mirrors.
/// A data kind may carry the partition token a broker mapping appends
/// (`telemetry.3`); announcements never do. Anything else: null.
function kindOf(rest) {
  const data = /^(telemetry|setup|field)(\.[0-9]+)?$/.exec(rest);
  if (data) return data[1];
  if (rest === "lap" || rest === "alerts" || rest === "events.deleted" ||
    rest === "events.expired") return rest;
  return null;
}

function onMessage(rest, msg) {
  const kind = kindOf(rest);
  if (kind === null) return;
  let value;
  try {
    value = msg.json();
  } catch {
    return; // frames come unvalidated from the broker: skip what does not parse
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) return;
  switch (kind) {
    case "telemetry":
      state.delta = view.liveDelta(state.reference, value);
      state.telemetry = value;
      state.lastFrameAt = Date.now();
      if (state.firstFrameAt === null) state.firstFrameAt = state.lastFrameAt;
      break;
    case "field": {
      const field = view.fieldOf(value);
      if (!field) return;
      state.field = field;
      state.fieldAt = Date.now();
      state.fieldSeq += 1;
      state.fieldChanged = true;
      refreshRejoin();
      break;
    }
    case "setup":
      state.setup = value;
      state.setupAt = Date.now();
      break;
    case "lap":
      pushLap(value);
      if (followed.nc) refreshNumbers(followed.nc, followed.id);
      break;
    case "alerts":
      if (typeof value.kind !== "string") return;
      if (value.state === "raised") state.alerts.set(value.kind, value);
      else if (value.state === "cleared") state.alerts.delete(value.kind);
      // A fuel alert means the tank changed: the strategy with it.
      if (followed.nc) refreshNumbers(followed.nc, followed.id);
      break;
    case "events.deleted":
      state.ended = "This session was deleted.";
      break;
    case "events.expired":
      state.ended = "This session expired: no data arrived for too long.";
      break;
    default:
      return;
  }
  requestDraw();
}

// ---------------------------------------------------------------------------
// Drawing, throttled

let drawPending = false;
let lastDraw = 0;

function requestDraw() {
  if (drawPending) return;
  drawPending = true;
  setTimeout(draw, Math.max(0, lastDraw + DRAW_EVERY_MS - Date.now()));
}

function draw() {
  drawPending = false;
  lastDraw = Date.now();
  const values = view.fields(state.telemetry, state.laps, state.setupAt);
  for (const el of document.querySelectorAll("[data-f]")) {
    const v = values[el.dataset.f];
    if (v !== undefined && el.textContent !== v) el.textContent = v;
  }
  if (state.setup) {
    const text = JSON.stringify(state.setup, null, 2);
    if ($("setup").textContent !== text) $("setup").textContent = text;
  }
  if (state.lapsChanged) {
    state.lapsChanged = false;
    drawLaps();
    askReference();
    lapOptions();
  }
  const delta = $("delta");
  const text = state.delta !== null ? view.deltaText(state.delta)
    : state.reference ? view.DASH : state.referenceNote;
  if (delta.textContent !== text) delta.textContent = text;
  delta.dataset.sign = state.delta === null ? (state.reference ? "" : "none")
    : state.delta < 0 ? "-" : state.delta > 0 ? "+" : "";
  drawNumbers();
  drawTiming();
  if (state.ended) {
    setLink("ended", state.endedAs || "ended");
    problem(state.ended);
  }
  tick();
}

/// Which card an alert belongs on.
const ALERT_CARD = {
  fuel_low: "card-fuel", pit_overdue: "card-fuel", tyre_hot: "card-tyres",
  tyre_cold: "card-tyres", brake_hot: "card-tyres", tyre_worn: "card-tyres",
};

/// The alerts banner and boxes, fuel to the finish, the stints.
function drawNumbers() {
  const alerts = [...state.alerts.values()];
  const banner = $("alerts");
  const text = alerts.map((a) => `${a.level === "critical" ? "⚠ " : ""}${a.message}`).join(" · ");
  if (banner.textContent !== text) banner.textContent = text;
  banner.hidden = alerts.length === 0;
  for (const card of ["card-fuel", "card-tyres"]) {
    const on = alerts.some((a) => ALERT_CARD[a.kind] === card);
    if (on) $(card).dataset.alert = "";
    else delete $(card).dataset.alert;
  }
  const s = state.strategy || {};
  const n = (k) => (typeof s[k] === "number" && Number.isFinite(s[k]) ? s[k] : null);
  const running = state.stints.length ? state.stints[state.stints.length - 1] : null;
  const values = {
    race_laps_left: n("race_laps_left") ?? view.DASH,
    // The next stop's fill; in a long race fuel_to_add is the total of many.
    next_stop_fuel: view.fixed(n("next_stop_fuel") ?? n("fuel_to_add"), 1, " L"),
    stops_needed: n("stops_needed") ?? view.DASH,
    fuel_to_add: view.fixed(n("fuel_to_add"), 1, " L"),
    last_lap_to_stop: n("last_lap_to_stop") ?? view.DASH,
    stint: running && running.ended_by === null
      ? `${view.laps(running.laps)} · ${view.clock(running.duration_s)}` : view.DASH,
  };
  for (const el of document.querySelectorAll("[data-s]")) {
    const v = String(values[el.dataset.s]);
    if (el.textContent !== v) el.textContent = v;
  }
  if (state.stintsChanged) {
    state.stintsChanged = false;
    const rows = state.stints.map((st) => {
      const tr = document.createElement("tr");
      const cells = [
        st.n, typeof st.driver === "string" ? st.driver : view.DASH, st.laps,
        view.clock(st.duration_s), view.lapTime(st.best_lap_time), view.lapTime(st.mean_lap_time),
        typeof st.fuel_per_lap === "number" ? `${st.fuel_per_lap.toFixed(2)} L` : view.DASH,
        typeof st.ended_by === "string" ? st.ended_by.replace("_", " ") : "running",
      ];
      for (const c of cells) {
        const td = document.createElement("td");
        td.textContent = String(c);
        tr.append(td);
      }
      return tr;
    });
    $("stints").tBodies[0].replaceChildren(...rows);
  }
}

/// The age line and the STALE banner, every half second between draws.
function tick() {
  const ageMs = state.lastFrameAt === null ? null : Date.now() - state.lastFrameAt;
  $("age").textContent = view.age(ageMs);
  const stale = ageMs === null || ageMs >= staleAfterMs;
  $("stale").hidden = !stale;
  document.body.classList.toggle("is-stale", stale);
  if (stale) $("stale-for").textContent = ageMs === null ? "yet" : view.age(ageMs).replace(" ago", "");
  const note = view.timingNote(state.field, state.fieldAt === null ? null : Date.now() - state.fieldAt,
    state.firstFrameAt === null ? null : Date.now() - state.firstFrameAt);
  if ($("timing-note").textContent !== note) $("timing-note").textContent = note;
}

/// The Timing view: the field by position, the session's own car marked,
/// and the rejoin line. Rows are made again only when a field came.
function drawTiming() {
  const line = view.rejoinText(state.rejoin);
  const rejoin = $("rejoin");
  if (rejoin.textContent !== (line ?? "")) rejoin.textContent = line ?? "";
  rejoin.hidden = line === null;
  if (state.rejoin && state.rejoin.undercut_window === true) rejoin.dataset.window = "";
  else delete rejoin.dataset.window;
  if (!state.fieldChanged) return;
  state.fieldChanged = false;
  const table = $("timing");
  table.hidden = state.field === null;
  if (!state.field) return;
  table.tBodies[0].replaceChildren(...view.timingRows(state.field).map((row) => {
    const tr = document.createElement("tr");
    tr.dataset.car = String(row.index);
    tr.dataset.status = row.status;
    if (row.player) tr.dataset.player = "";
    if (row.pitting) tr.dataset.pit = "";
    for (const cell of row.cells) {
      const td = document.createElement("td");
      if (cell && typeof cell === "object") {
        for (const [cls, text] of [["long", cell.long], ["short", cell.short]]) {
          const span = document.createElement("span");
          span.className = cls;
          span.textContent = text;
          td.append(span);
        }
      } else {
        td.textContent = String(cell);
      }
      tr.append(td);
    }
    return tr;
  }));
}

function drawLaps() {
  const body = $("laps").tBodies[0];
  const rows = state.laps.slice(-200).reverse();
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    if (r.pit) tr.className = "pit";
    for (const text of [
      String(r.lap),
      view.lapTime(r.time),
      view.fixed(r.fuelUsed, 2, " L"),
      r.frames === null ? view.DASH : String(r.frames),
      r.pit ? "PIT" : "",
    ]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  }));
  const numbered = state.laps.filter((r) => typeof r.lap === "number");
  const xs = numbered.map((r) => r.lap);
  charts.laps?.setData([xs, numbered.map((r) => (r.pit ? null : r.time))]);
  charts.fuel?.setData([xs, numbered.map((r) => r.fuelUsed)]);
}

const charts = {};

function setupCharts() {
  const axisColor = "#c9d1d9";
  const grid = { stroke: "#30363d", width: 1 };
  const make = (el, label, color, fmt) => new uPlot({
    width: el.clientWidth || 320,
    height: 180,
    legend: { show: false },
    cursor: { show: false },
    scales: { x: { time: false } },
    axes: [
      // Laps are whole numbers: integer steps only, written without a
      // thousands separator (uPlot's default would show 4,242.2).
      {
        stroke: axisColor, grid, label: "lap",
        incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
        values: (u, vals) => vals.map((v) => (Number.isInteger(v) ? String(v) : "")),
      },
      { stroke: axisColor, grid, size: 84, values: (u, vals) => vals.map((v) => fmt(v, view.tickDecimals(vals))) },
    ],
    series: [{}, { label, stroke: color, width: 2, points: { show: true, size: 6 }, spanGaps: false }],
  }, [[], []], el);
  charts.laps = make($("chart-laps"), "lap time", "#58a6ff", (v) => view.lapTime(v));
  // As many decimals as the ticks' step needs (ticks 0.05 L apart written
  // to one decimal read 5.45 as 5.5).
  charts.fuel = make($("chart-fuel"), "fuel used", "#f0b429", (v, d) => `${v.toFixed(Math.max(1, d))} L`);
  const resize = () => {
    for (const [key, el] of [["laps", $("chart-laps")], ["fuel", $("chart-fuel")]]) {
      charts[key].setSize({ width: el.clientWidth || 320, height: 180 });
    }
  };
  new ResizeObserver(resize).observe($("card-charts"));
}

// ---------------------------------------------------------------------------
// The live delta and the Laps view: traces over `sessions.trace` and
// `sessions.compare` (docs/PROTOCOL.md "Traces")

/// Asks for the best lap's trace when the best lap time changed: once per new
/// best lap, one channel (the delta needs the grid and the elapsed time).
function askReference() {
  const best = view.bestLap(state.laps);
  if (best === null || best === state.referenceAskedFor || !followed.nc) return;
  state.referenceAskedFor = best;
  ask(followed.nc, `sessions.trace.${followed.id}`, { lap: "best", channels: ["speed"], step_m: 5 })
    .then((trace) => {
      state.reference = view.referenceOf(trace);
      state.referenceNote = state.reference ? "" : "no live delta: this source sends no lap_distance";
    })
    .catch((e) => {
      state.reference = null;
      state.referenceNote = e.code === 404 ? "no reference lap yet"
        : e.code === 503 ? "no live delta: the processor records no traces"
          : "no reference lap";
      // No answer at all (no processor now): the next lap asks again.
      if (!e.code) state.referenceAskedFor = null;
    })
    .finally(() => {
      state.delta = view.liveDelta(state.reference, state.telemetry);
      requestDraw();
    });
}

/// What the Laps view shows: the lap picked (the latest until a person picks
/// one), the reference, the teammates a team link may compare against.
const lapsView = { follow: true, teammates: new Map(), seq: 0, charts: {} };

const LAP_COLOR = "#58a6ff";
const REF_COLOR = "#f0b429";

function setupTraceView(nc, id) {
  const axisColor = "#c9d1d9";
  const grid = { stroke: "#30363d", width: 1 };
  const make = (el, height, series, fmt, y = {}) => new uPlot({
    width: el.clientWidth || 320,
    height,
    legend: { show: false },
    cursor: { show: false },
    scales: { x: { time: false }, y: y.scale || {} },
    axes: [
      { stroke: axisColor, grid, values: (u, vals) => vals.map((v) => `${(v / 1000).toFixed(1)} km`) },
      // Ticks 20 px apart at least (uPlot's 30 left a short chart one label).
      { stroke: axisColor, grid, size: 50, space: 20, values: (u, vals) => vals.map(fmt), ...(y.axis || {}) },
    ],
    series: [{}, ...series],
  }, [[], ...series.map(() => [])], el);
  const lap = (label, color = LAP_COLOR) => ({ label, stroke: color, width: 1.5, spanGaps: false });
  const ref = (label, color = REF_COLOR) => ({ label, stroke: color, width: 1.5, dash: [6, 4], spanGaps: false });
  const n0 = (v) => v.toFixed(0);
  lapsView.charts = {
    speed: [$("chart-speed"), 150, make($("chart-speed"), 150, [lap("speed"), ref("speed")], n0)],
    pedals: [$("chart-pedals"), 150, make($("chart-pedals"), 150,
      [lap("throttle", "#3fb950"), ref("throttle", "#3fb950"), lap("brake", "#ff5d5d"), ref("brake", "#ff5d5d")], n0)],
    // Gears are whole numbers from 0 (neutral) up: a tick per gear or two, so
    // the steps read as gears rather than a line squashed into a few pixels.
    gear: [$("chart-gear"), 120, make($("chart-gear"), 120, [lap("gear"), ref("gear")], n0, {
      scale: { range: (u, min, max) => [0, Math.max(6, Math.ceil(max ?? 6))] },
      axis: { incrs: [1, 2, 4] },
    })],
    // Around zero, at least ±0.5 s: a lap level with its reference draws a
    // flat line in the middle, not one at the foot of a 0–100 axis.
    delta: [$("chart-delta"), 150, make($("chart-delta"), 150,
      [{ label: "delta", stroke: "#e6edf3", width: 1.5, spanGaps: false, fill: "rgba(88,166,255,0.12)" }],
      (v) => v.toFixed(2), {
        scale: {
          range: (u, min, max) => {
            const m = Math.max(0.5, Math.abs(min ?? 0), Math.abs(max ?? 0)) * 1.1;
            return [-m, m];
          },
        },
      })],
  };
  new ResizeObserver(() => {
    for (const [el, height, chart] of Object.values(lapsView.charts)) {
      chart.setSize({ width: el.clientWidth || 320, height });
    }
  }).observe($("card-trace"));
  $("trace-lap").addEventListener("change", () => {
    lapsView.follow = false;
    refOptions();
    compare();
  });
  $("trace-ref").addEventListener("change", compare);
  $("lap-csv").addEventListener("click", (e) => download(e, "csv"));
  $("lap-motec").addEventListener("click", (e) => download(e, "motec"));
  // A team link's car page may compare against a teammate's best: the team's
  // cars from its tower (the processors' feed a team link may read).
  if (access.team) {
    nc.subscribe(teamSubject(access.team), {
      callback: (err, msg) => {
        if (err) return;
        let doc;
        try { doc = msg.json(); } catch { return; }
        if (!doc || !Array.isArray(doc.cars)) return;
        let added = false;
        for (const row of doc.cars) {
          if (!row || typeof row.session_id !== "string" || row.session_id === id) continue;
          if (!lapsView.teammates.has(row.session_id)) added = true;
          lapsView.teammates.set(row.session_id,
            typeof row.car === "string" ? row.car : row.session_id.slice(0, 8));
        }
        if (added) refOptions();
      },
    });
  }
}

/// The laps with a number, newest first.
function numberedLaps() {
  return [...new Set(state.laps.filter((r) => typeof r.lap === "number").map((r) => r.lap))]
    .sort((a, b) => b - a);
}

/// Fills the lap picker (the latest lap unless a person picked one).
function lapOptions() {
  const select = $("trace-lap");
  const laps = numberedLaps();
  const picked = lapsView.follow || select.value === "" ? laps[0] : Number(select.value);
  const times = new Map(state.laps.map((r) => [r.lap, r.time]));
  const options = laps.map((n) => {
    const o = document.createElement("option");
    o.value = String(n);
    o.textContent = `lap ${n} · ${view.lapTime(times.get(n) ?? null)}`;
    return o;
  });
  const before = select.value;
  select.replaceChildren(...options);
  if (picked !== undefined) select.value = String(picked);
  if (!laps.length) {
    $("trace-note").textContent = "no completed lap yet";
    return;
  }
  refOptions();
  if (select.value !== before || !lapsView.shown) compare();
}

/// Fills the reference picker for the lap picked, keeping the choice.
function refOptions() {
  const select = $("trace-ref");
  const lap = Number($("trace-lap").value);
  const teammates = [...lapsView.teammates.entries()].map(([id, car]) => ({ id, car }));
  const before = select.value;
  const choices = view.referenceChoices(lap, numberedLaps(), teammates);
  select.replaceChildren(...choices.map((c) => {
    const o = document.createElement("option");
    o.value = c.value;
    o.textContent = c.label;
    return o;
  }));
  if (choices.some((c) => c.value === before)) select.value = before;
}

/// Asks for the lap against the reference and draws both and the delta.
async function compare() {
  const lapValue = $("trace-lap").value;
  if (lapValue === "" || !followed.nc) return;
  const seq = ++lapsView.seq;
  const lap = Number(lapValue);
  const against = JSON.parse($("trace-ref").value || '"best"');
  const refLabel = $("trace-ref").selectedOptions[0]?.textContent ?? "best";
  let c;
  try {
    c = await ask(followed.nc, `sessions.compare.${followed.id}`,
      { lap, against, channels: ["speed", "throttle", "brake", "gear"], step_m: 5 });
  } catch (e) {
    if (seq !== lapsView.seq) return;
    $("trace-note").textContent = e.code === 400 && /lap_distance/.test(e.message)
      ? "this source sends no lap_distance: laps cannot be laid over each other by distance"
      : `cannot compare: ${e.message || e}`;
    return;
  }
  if (seq !== lapsView.seq) return;
  lapsView.shown = { lap, against };
  const xs = c.distance_m;
  const len = xs.length;
  const ch = (t, name, scale = 1) => ((t.channels || {})[name] || []).slice(0, len)
    .map((v) => (typeof v === "number" ? v * scale : null));
  const { speed, pedals, gear, delta } = lapsView.charts;
  speed[2].setData([xs, ch(c.lap, "speed"), ch(c.reference, "speed")]);
  pedals[2].setData([xs, ch(c.lap, "throttle", 100), ch(c.reference, "throttle", 100),
    ch(c.lap, "brake", 100), ch(c.reference, "brake", 100)]);
  gear[2].setData([xs, ch(c.lap, "gear"), ch(c.reference, "gear")]);
  delta[2].setData([xs, c.delta_s]);
  const last = [...c.delta_s].reverse().find((d) => typeof d === "number");
  const card = $("card-trace");
  card.dataset.lap = String(lap);
  card.dataset.reference = JSON.stringify(c.reference.lap);
  card.dataset.points = String(len);
  card.dataset.delta = last === undefined ? "" : String(last);
  const gaps = (c.lap.gaps || []).length + (c.reference.gaps || []).length;
  if (c.reference.lap === lap) {
    // Against itself (the lap is the best): a delta of zero everywhere says
    // nothing, so the lap before it is the reference, if there is one.
    const previous = [...$("trace-ref").options].find((o) => o.textContent.startsWith("previous"));
    if (previous && $("trace-ref").value !== previous.value) {
      $("trace-ref").value = previous.value;
      return compare();
    }
    delta[2].setData([xs, []]);
    $("trace-note").textContent = numberedLaps().length < 2
      ? `lap ${lap} is the only lap so far: the next one is compared against it`
      : `lap ${lap} is the ${refLabel}: pick another reference to compare it with`;
    return;
  }
  $("trace-note").textContent = `lap ${lap} against ${refLabel} (lap ${c.reference.lap})` +
    (last === undefined ? "" : `: ${view.deltaText(last)} at ${(xs[len - 1] / 1000).toFixed(2)} km`) +
    (gaps ? ` · ${gaps} stretch${gaps === 1 ? "" : "es"} with no frames left blank` : "");
}

/// The picked lap's frames as recorded, downloaded as CSV (written here,
/// as `paddock sessions export` writes it) or MoTeC i2 files (the server
/// turns the frames this page read into .ld and .ldx: it reads nothing
/// itself, and holds no credentials).
async function download(e, format) {
  e.preventDefault();
  const lapValue = $("trace-lap").value;
  if (lapValue === "" || !followed.nc) return;
  const lap = Number(lapValue);
  const name = `${followed.id}-lap${lap}`;
  try {
    const trace = await ask(followed.nc, `sessions.trace.${followed.id}`,
      { lap, channels: view.TRACE_COLUMNS.map((c) => c[0]), raw: true });
    let blob;
    if (format === "csv") {
      blob = new Blob([view.traceCsv([trace])], { type: "text/csv" });
    } else {
      const t = state.telemetry || {};
      const details = { driver: view.str(t, "player_name"), vehicle: view.str(t, "car_name"),
        venue: view.str(t, "track_name") };
      const reply = await fetch(`/export/motec?name=${encodeURIComponent(name)}`, {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ traces: [trace], details }),
      });
      if (!reply.ok) throw new Error(await reply.text());
      blob = await reply.blob();
    }
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = format === "csv" ? `${name}.csv` : `${name}-motec.zip`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    // What was last handed to the browser, and its size (the tests read it).
    $("card-trace").dataset.downloaded = `${format} ${blob.size}`;
  } catch (err) {
    $("trace-note").textContent = `cannot download lap ${lap}: ${err.message || err}`;
  }
}

/// A QR code of this very page (with its fragment), for a second device.
function showQr() {
  const qr = qrcode(0, "L");
  qr.addData(location.href);
  qr.make();
  const n = qr.getModuleCount();
  const scale = Math.max(2, Math.floor(280 / (n + 8)));
  const canvas = $("qr");
  canvas.width = canvas.height = (n + 8) * scale;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#000";
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) {
      if (qr.isDark(r, c)) ctx.fillRect((c + 4) * scale, (r + 4) * scale, scale, scale);
    }
  }
}

// ---------------------------------------------------------------------------
// The session list (open or team mode: where the broker lets the page list)

async function list(nc) {
  $("list-view").hidden = false;
  $("stale").hidden = true;
  $("age").textContent = "";
  const refresh = async () => {
    try {
      const page = await ask(nc, "sessions.list", { limit: 1000 });
      setLink("live");
      clearProblem();
      drawList(page);
    } catch (e) {
      if (isPermission(e)) {
        setLink("refused", "not allowed");
        problem("This broker does not let this page list sessions. Open a session from its " +
          "link (paddock sessions share <id>, or the monitor's output).");
      } else {
        problem(`Cannot list sessions: ${e.message || e}`);
      }
    }
  };
  let timer = null;
  const soon = () => {
    if (!timer) timer = setTimeout(() => { timer = null; refresh(); }, 500);
  };
  nc.subscribe("sessions.events.>", { callback: (err) => { if (!err) soon(); } });
  await refresh();
  setInterval(refresh, 10000);
  watchStatus(nc, refresh);
}

/// The live sessions grouped by team (teams in name order, sessions without a
/// team last), each group under a header row naming the team.
function drawList(page) {
  const sessions = [...(page.sessions || [])];
  const teamOf = (s) => (typeof s.team === "string" ? s.team : "");
  sessions.sort((a, b) => {
    const [ta, tb] = [teamOf(a), teamOf(b)];
    if (ta !== tb) return ta === "" ? 1 : tb === "" ? -1 : ta.localeCompare(tb);
    return 0;
  });
  const rows = [];
  let group = null;
  for (const s of sessions) {
    if (teamOf(s) !== group) {
      group = teamOf(s);
      const tr = document.createElement("tr");
      tr.className = "team";
      tr.dataset.team = group;
      const th = document.createElement("th");
      th.colSpan = 5;
      if (group === "") {
        th.textContent = "No team";
      } else {
        const a = document.createElement("a");
        a.href = `/team/${encodeURIComponent(group)}`;
        a.textContent = group;
        th.append(a);
      }
      tr.append(th);
      rows.push(tr);
    }
    const tr = document.createElement("tr");
    const a = document.createElement("a");
    a.href = `/session/${encodeURIComponent(s.session_id)}`;
    a.textContent = String(s.session_id);
    const car = typeof s.car === "string" ? s.car : view.DASH;
    const cells = [car, a, fmtTime(s.created_at), fmtTime(s.last_update), String(s.telemetry_count)];
    for (const cell of cells) {
      const td = document.createElement("td");
      td.append(cell);
      tr.append(td);
    }
    rows.push(tr);
  }
  $("sessions").tBodies[0].replaceChildren(...rows);
  $("list-note").textContent = sessions.length ? `${page.total} live` : "No live sessions.";
}

function fmtTime(t) {
  const ms = Date.parse(t);
  return Number.isFinite(ms) ? new Date(ms).toLocaleTimeString() : view.DASH;
}

// ---------------------------------------------------------------------------
// Requests, link state and problems

/// A request to the sessions service; rejects with the service's error text for
/// an error reply (micro error headers), or the client's error.
async function ask(nc, subject, body = {}) {
  const msg = await nc.request(subject, JSON.stringify(body), { timeout: REQUEST_TIMEOUT_MS });
  const code = msg.headers && msg.headers.get("Nats-Service-Error-Code");
  if (code) {
    let text = msg.headers.get("Nats-Service-Error") || `error ${code}`;
    let reason = null;
    try {
      const body = msg.json();
      text = body.error || text;
      reason = typeof body.reason === "string" ? body.reason : null;
    } catch { /* the header's text */ }
    const e = new Error(text);
    e.code = Number(code);
    // The stable label (`link_revoked`, …): what the page tells apart by.
    e.reason = reason;
    throw e;
  }
  return msg.json();
}

/// The link's renewal was refused for good: the team withdrew it (403
/// `link_revoked`), it is from before links had ids (403 `link_required`), or
/// no processor knows it any more (404 `unknown_link`).
/// Its credentials would keep working until they expire; the page lets go of
/// them now and says why, rather than go quiet later.
function withdrawn(nc, e) {
  const text = e.reason === "link_revoked" ? WITHDRAWN
    : `This link is no longer renewed: ${e.message}`;
  state.ended = text;
  state.endedAs = "withdrawn";
  setLink("ended", "withdrawn");
  problem(text);
  nc.close().catch(() => {});
}

function isPermission(e) {
  const text = `${e && e.name} ${e && e.message} ${e && e.cause && e.cause.message}`;
  return /permission/i.test(text);
}

function refused(e, id) {
  if (isPermission(e)) {
    setLink("refused", "not allowed");
    problem(`The broker refused access to session ${id}: this link's credentials are for ` +
      "another session, or have expired.");
  }
}

/// Shows why a join failed; answers whether trying again may help.
function failed(e, id) {
  if (isPermission(e)) {
    refused(e, id);
    return false;
  }
  if (e.code === 404) {
    setLink("ended", "not found");
    problem(`No live session ${id}: it ended, or never existed.`);
    return false;
  }
  if (e.code) {
    problem(`paddock refused: ${e.message}`);
    return false;
  }
  setLink("reconnecting", "no answer");
  problem(`No answer from paddock (${e.message || e}); retrying.`);
  return true;
}

/// Follows the connection: shows the link state, and calls `rejoin` after every
/// reconnect (the subscription comes back by itself; the snapshot does not).
async function watchStatus(nc, rejoin) {
  for await (const s of nc.status()) {
    switch (s.type) {
      case "disconnect":
      case "reconnecting":
        setLink("reconnecting");
        break;
      case "reconnect":
        setLink("connecting", "rejoining");
        rejoin();
        break;
      case "error":
        if (isPermission(s.error)) console.warn("refused:", s.error.message);
        break;
      default:
        break;
    }
  }
}

function setLink(stateName, text) {
  const el = $("link");
  el.dataset.state = stateName;
  el.textContent = text || stateName;
}

function problem(text) {
  const el = $("problem");
  el.textContent = text;
  el.hidden = false;
}

function clearProblem() {
  if (!state.ended) $("problem").hidden = true;
}
