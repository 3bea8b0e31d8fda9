// What the page shows, derived from the session's data: pure functions, no DOM and
// no NATS, so app.js stays about connections and drawing.
//
// Frames come straight from the monitor (the broker does not validate them): any
// field may be missing or of another type. Every accessor here returns null for
// that, and `text` turns null into "—".

export const DASH = "—";

/// A number at `obj[key]`, or null.
export function num(obj, key) {
  const v = obj && typeof obj === "object" ? obj[key] : undefined;
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

/// A string (or number, shown as text) at `obj[key]`, or null.
export function str(obj, key) {
  const v = obj && typeof obj === "object" ? obj[key] : undefined;
  if (typeof v === "string") return v;
  if (typeof v === "number" && Number.isFinite(v)) return String(v);
  return null;
}

/// Seconds as m:ss.mmm (lap times).
export function lapTime(s) {
  if (s === null || !(s > 0)) return DASH;
  const m = Math.floor(s / 60);
  const rest = s - m * 60;
  return `${m}:${rest.toFixed(3).padStart(6, "0")}`;
}

/// Seconds as h:mm:ss (race time).
export function clock(s) {
  if (s === null || s < 0) return DASH;
  const t = Math.floor(s);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  return `${h}:${String(m).padStart(2, "0")}:${String(t % 60).padStart(2, "0")}`;
}

/// The team tower's pits cell after the stop count: the next stop's fill,
/// the lap to make it by, and the stops left when there are several.
export function nextStop(fill, byLap, stops) {
  if (fill === null) return "";
  return ` · add ${fill.toFixed(1)} L`
    + (byLap === null ? "" : ` by L${byLap}`)
    + (stops !== null && stops > 1 ? ` · ${stops} stops` : "");
}

/// A count of laps: "1 lap", "3 laps".
export function laps(n) {
  return `${n} ${n === 1 ? "lap" : "laps"}`;
}

/// A number with `digits` decimals and a unit, or "—".
export function fixed(v, digits, unit = "") {
  return v === null ? DASH : `${v.toFixed(digits)}${unit}`;
}

/// One completed lap as a table row and chart point, from a lap record
/// (`sessions.laps`, `session.<id>.lap`) and the row before it.
export function lapRow(record, previous) {
  const last = record && typeof record.last_frame === "object" ? record.last_frame : {};
  const next = record && typeof record.next_frame === "object" ? record.next_frame : {};
  const elapsed = (Date.parse(record.ended_at) - Date.parse(record.started_at)) / 1000;
  // Sims report the finished lap's time on the next lap's first frame.
  const time = num(next, "last_lap_time") ?? num(last, "lap_time") ??
    (Number.isFinite(elapsed) && elapsed > 0 ? elapsed : null);
  const fuelAtEnd = num(next, "fuel");
  const start = previous ? previous.fuelAtEnd : null;
  let fuelUsed = start !== null && fuelAtEnd !== null ? start - fuelAtEnd : null;
  const refuelled = fuelUsed !== null && fuelUsed < 0;
  if (refuelled) fuelUsed = null;
  return {
    lap: typeof record.lap === "number" ? record.lap : str(record, "lap") ?? DASH,
    time,
    fuelUsed,
    fuelAtEnd,
    frames: num(record, "frames"),
    endedAt: record.ended_at,
    pit: refuelled || last.in_pits === true || next.in_pits === true,
    // What the CSV export adds (the columns of `paddock sessions laps --csv`):
    // the line as the lap's last frame saw it.
    line: {
      simTime: num(next, "last_lap_time"),
      driver: typeof last.player_name === "string" ? last.player_name : null,
      position: num(last, "position"),
      fuel: num(last, "fuel"),
      pitted: record.pitted === true,
      corners: CSV_CORNER_KEYS.map((key) => CORNERS.map((c) => num(last[key], c))),
      startedAt: record.started_at,
    },
  };
}

const CORNERS = ["fl", "fr", "rl", "rr"];
const CSV_CORNER_KEYS = ["tire_temps", "tire_wear", "tire_pressures", "brake_temps"];

/// The laps as CSV, with the columns and numbers of `paddock sessions laps
/// --csv` (RFC 4180, units in the header, CRLF): lap time from the sim, the
/// rest as the lap's last frame had it at the line, fuel used since the
/// previous lap's line (empty for the first and for a lap that refuelled).
export function lapsCsv(rows) {
  const cell = (v) => {
    const s = v === null || v === undefined ? "" : String(v);
    return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  const header = ["lap", "lap_time_s", "driver", "position", "fuel_at_line_l", "fuel_used_l", "in_pits"];
  for (const what of ["tyre_temp_%_c", "tyre_wear_%_fraction_left", "tyre_pressure_%_psi", "brake_temp_%_c"]) {
    header.push(...CORNERS.map((c) => what.replace("%", c)));
  }
  header.push("frames", "started_at", "ended_at");
  const out = [header];
  let previous = null;
  for (const r of rows) {
    const l = r.line;
    const used = previous !== null && l.fuel !== null && previous - l.fuel >= 0
      ? Math.round((previous - l.fuel) * 1000) / 1000 : null;
    previous = l.fuel;
    out.push([r.lap, l.simTime, l.driver, l.position, l.fuel, used, l.pitted,
      ...l.corners.flat(), r.frames, l.startedAt, r.endedAt]);
  }
  return out.map((r) => r.map(cell).join(",")).join("\r\n") + "\r\n";
}

/// Laps whose fuel burn is averaged for the fuel estimate.
const BURN_WINDOW = 5;

/// Litres per lap over the last laps without a pit stop, or null.
export function fuelPerLap(rows) {
  const burns = [];
  for (let i = rows.length - 1; i >= 0 && burns.length < BURN_WINDOW; i--) {
    const r = rows[i];
    if (!r.pit && r.fuelUsed !== null && r.fuelUsed > 0) burns.push(r.fuelUsed);
  }
  return burns.length ? burns.reduce((a, b) => a + b, 0) / burns.length : null;
}

/// The best lap time among `rows`, or null.
export function bestLap(rows) {
  let best = null;
  for (const r of rows) if (r.time !== null && (best === null || r.time < best)) best = r.time;
  return best;
}

/// Every value the page shows as text, keyed like the `data-f` attributes of
/// index.html. `t` is the latest telemetry frame (or null), `rows` the laps.
export function fields(t, rows, setupAt) {
  const f = {};
  for (const k of ["player_name", "car_name", "track_name", "flag"]) f[k] = str(t, k) ?? DASH;
  const lap = num(t, "lap");
  f.lap = lap === null ? DASH : String(lap);
  const pos = num(t, "position");
  f.position = pos === null ? DASH : `P${pos}`;
  const lastLap = num(t, "last_lap_time") ?? (rows.length ? rows[rows.length - 1].time : null);
  f.last_lap = lapTime(lastLap);
  const best = num(t, "best_lap_time") ?? bestLap(rows);
  f.best_lap = lapTime(best);
  f.speed = fixed(num(t, "speed"), 0, " km/h");
  const gear = num(t, "gear");
  f.gear = gear === null ? DASH : gear === 0 ? "N" : gear < 0 ? "R" : String(gear);
  f.session_time = clock(num(t, "session_time"));

  const fuel = num(t, "fuel");
  const capacity = num(t, "fuel_capacity");
  f.fuel = fixed(fuel, 1, " L");
  f.fuel_pct = fuel !== null && capacity ? `${((100 * fuel) / capacity).toFixed(0)} %` : DASH;
  const perLap = fuelPerLap(rows);
  f.fuel_per_lap = fixed(perLap, 2, " L");
  f.laps_left = fuel !== null && perLap ? (fuel / perLap).toFixed(1) : DASH;

  const corners = (key) => (t && typeof t[key] === "object" && t[key] !== null ? t[key] : {});
  for (const c of CORNERS) {
    f[`tt_${c}`] = fixed(num(corners("tire_temps"), c), 0, " °C");
    f[`tp_${c}`] = fixed(num(corners("tire_pressures"), c), 1, " psi");
    const wear = num(corners("tire_wear"), c);
    f[`tw_${c}`] = wear === null ? DASH : `${(wear * 100).toFixed(0)} %`;
    f[`bt_${c}`] = fixed(num(corners("brake_temps"), c), 0, " °C");
  }
  f.setup_at = setupAt ? `received ${new Date(setupAt).toLocaleTimeString()}` : "";
  return f;
}

/// How a frame age reads: "0.4 s ago", "3 min ago".
export function age(ms) {
  if (ms === null) return "no telemetry yet";
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

// ---------------------------------------------------------------------------
// Laps as traces (docs/PROTOCOL.md "Traces")

/// The best lap as the live delta's reference: its elapsed time along its
/// distance grid, from a `sessions.trace` reply on a distance axis, or null
/// (a source without `lap_distance`). The arithmetic of
/// `protocol::trace::LiveReference` in Rust (what `paddock watch` shows), so
/// the page and the terminal agree to the millisecond.
export function referenceOf(trace) {
  if (!trace || trace.axis !== "distance" || !Array.isArray(trace.distance_m)) return null;
  const points = [];
  for (let k = 0; k < trace.distance_m.length; k++) {
    const d = trace.distance_m[k];
    const t = Array.isArray(trace.elapsed_s) ? trace.elapsed_s[k] : null;
    if (typeof d === "number") points.push([d, typeof t === "number" ? t : null]);
  }
  if (!points.some((p) => p[1] !== null)) return null;
  return { lap: trace.lap, points };
}

/// The reference's time at `d` metres: linear between the grid points around
/// it; null before the line, past its end, or in a gap.
export function timeAt(ref, d) {
  if (!ref || typeof d !== "number" || !Number.isFinite(d)) return null;
  const p = ref.points;
  let lo = 0;
  let hi = p.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (p[mid][0] < d) lo = mid + 1;
    else hi = mid;
  }
  if (lo >= p.length) return null;
  const [d1, t1] = p[lo];
  if (d1 === d) return t1;
  if (lo === 0) return null;
  const [d0, t0] = p[lo - 1];
  if (t0 === null || t1 === null) return null;
  return t0 + (t1 - t0) * ((d - d0) / (d1 - d0));
}

/// A frame's time against the reference at its distance, seconds, + = slower;
/// null without `lap_distance` and a `lap_time` of 0 or more, and for more
/// than half the reference lap (a frame whose distance is still the previous
/// lap's).
export function liveDelta(ref, frame) {
  const t = num(frame, "lap_time");
  if (ref === null || t === null || t < 0) return null;
  const at = timeAt(ref, num(frame, "lap_distance"));
  if (at === null) return null;
  const lap = [...ref.points].reverse().find((p) => p[1] !== null);
  const delta = t - at;
  return lap && Math.abs(delta) <= lap[1] / 2 ? Math.round(delta * 1000) / 1000 : null;
}

/// "−0.234 s" (a minus sign), "+1.020 s".
/// Decimals an axis needs to write its ticks `vals` apart from each other:
/// as many as their step has (0.05 apart: 2), at most 3.
export function tickDecimals(vals) {
  const step = vals.length > 1 ? Math.abs(vals[1] - vals[0]) : 1;
  if (!(step > 0)) return 0;
  let d = 0;
  while (d < 3 && Math.abs(Math.round(step * 10 ** d) - step * 10 ** d) > 1e-6) d += 1;
  return d;
}

export function deltaText(d) {
  return `${d < 0 ? "\u2212" : "+"}${Math.abs(d).toFixed(3)} s`;
}

/// The channels `paddock sessions export` writes, with their CSV columns
/// (cmd/format.rs TRACE_COLUMNS): the same file from the page and the CLI.
export const TRACE_COLUMNS = [
  ["speed", "speed_kmh"], ["throttle", "throttle_fraction"], ["brake", "brake_fraction"],
  ["steering", "steering_fraction"], ["gear", "gear"], ["rpm", "rpm_per_min"],
];

/// Recorded laps (`sessions.trace` with `"raw": true`) as RFC 4180 CSV, as
/// `paddock sessions export --format csv` writes them: units in the header,
/// one row per frame, CRLF.
export function traceCsv(traces) {
  const cell = (v) => (typeof v === "number" && Number.isFinite(v) ? String(v) : "");
  const rows = [["lap", "time_s", "distance_m", ...TRACE_COLUMNS.map((c) => c[1])].join(",")];
  for (const t of traces) {
    const lap = typeof t.lap === "string" ? t.lap : JSON.stringify(t.lap);
    const times = Array.isArray(t.elapsed_s) ? t.elapsed_s : [];
    for (let k = 0; k < times.length; k++) {
      const row = [lap, cell(times[k]), cell((t.distance_m || [])[k])];
      for (const [channel] of TRACE_COLUMNS) row.push(cell(((t.channels || {})[channel] || [])[k]));
      rows.push(row.join(","));
    }
  }
  return rows.join("\r\n") + "\r\n";
}

/// What the Laps view's reference picker offers: the session's best, the
/// lap before the chosen one, and each teammate's best (a team link's car
/// page). `value` is what `sessions.compare` takes as `against`, as JSON.
export function referenceChoices(lap, numbered, teammates) {
  const out = [{ label: "own best", value: JSON.stringify("best") }];
  const before = numbered.filter((n) => n < lap);
  if (before.length) {
    const prev = Math.max(...before);
    out.push({ label: `previous (lap ${prev})`, value: JSON.stringify({ lap: prev }) });
  }
  for (const t of teammates) {
    out.push({ label: `${t.car}'s best`, value: JSON.stringify({ session_id: t.id, lap: "best" }) });
  }
  return out;
}

// ---------------------------------------------------------------------------
// The Timing view: every car on track (docs/PROTOCOL.md "The field")

/// Most cars a field may hold (src/protocol/field.rs MAX_CARS).
const FIELD_MAX_CARS = 128;

/// A field as it came off the wire, or null when it is not one a reader can
/// index: the processor refuses a bad field (and keeps its last good one),
/// but a dashboard reads the subject straight from the broker, so it holds
/// the message to the same outline itself.
export function fieldOf(value) {
  if (!value || typeof value !== "object" || !Array.isArray(value.cars)) return null;
  if (value.cars.length > FIELD_MAX_CARS) return null;
  const ok = value.cars.every((c) => c && typeof c === "object" &&
    Number.isInteger(c.position) && c.position >= 1 && Number.isInteger(c.index));
  return ok ? value : null;
}

/// A gap in seconds as the tower writes it: "+2.345", or "—".
export function gapText(s) {
  return s === null ? DASH : `+${s.toFixed(3)}`;
}

/// How a car is named in a row: "#44 Hamilton", "Hamilton", "#44", "car 3".
export function carName(car) {
  const n = num(car, "race_number");
  const d = str(car, "driver");
  if (n !== null && d !== null) return `#${n} ${d}`;
  if (d !== null) return d;
  return n !== null ? `#${n}` : `car ${num(car, "index") ?? "?"}`;
}

/// One field's rows, by position (the field's own order is by position, but
/// a reader does not take that on trust): each row's cells in the table's
/// column order (text, or `{long, short}` for a desk and a phone), whether
/// it is the session's own car, and its status.
export function timingRows(field) {
  const cars = [...field.cars].sort((a, b) => a.position - b.position || a.index - b.index);
  return cars.map((car, k) => {
    const status = str(car, "status");
    const pitting = status === "pitting" || car.in_pits === true;
    const gap = num(car, "gap_leader");
    const interval = num(car, "interval");
    const tyre = str(car, "tyre");
    const age = num(car, "tyre_age_laps");
    const out = status === "retired";
    const word = out ? "RET" : status === "finished" ? "FIN" : pitting ? "PIT" : "";
    return {
      index: car.index,
      player: car.player === true,
      status: status ?? "running",
      pitting,
      cells: [
        `P${car.position}`,
        carName(car),
        str(car, "team") ?? DASH,
        num(car, "lap") ?? DASH,
        // The leader's gap and interval are 0 (or absent): it leads. A
        // retired car's are whatever the game left there (F1: 0).
        out ? DASH : k === 0 && !(gap > 0) ? "leader" : gapText(gap),
        out || (k === 0 && !(interval > 0)) ? DASH : gapText(interval),
        lapTime(num(car, "last_lap")),
        lapTime(num(car, "best_lap")),
        num(car, "pit_stops") ?? DASH,
        // In full on a desk, as a timing screen's letter on a phone: "M 10".
        tyre === null ? DASH : {
          long: age === null ? tyre : `${tyre} · ${age}`,
          short: `${tyre.slice(0, 1).toUpperCase()}${age === null ? "" : ` ${age}`}`,
        },
        word,
      ],
    };
  });
}

/// What the Timing view says above its rows: the game, the cars and the
/// field's age; or why there are no rows. `ageMs`: since the field arrived;
/// `framesForMs`: how long the session has had telemetry (null: none yet).
export function timingNote(field, ageMs, framesForMs) {
  if (field) {
    const n = field.cars.length;
    const game = str(field, "game");
    return [game, `${n} car${n === 1 ? "" : "s"}`, ageMs === null ? null : age(ageMs)]
      .filter((x) => x !== null).join(" · ");
  }
  // A monitor that sends a field sends the first within a second of its
  // first frame (--field-hz): ten seconds of frames without one is a sim
  // (or a monitor) that sends none.
  return framesForMs !== null && framesForMs >= FIELD_EXPECTED_MS
    ? "this sim sends no field (the other cars): the car's own timing is in the cards above"
    : "no field yet";
}

/// How long a session sends telemetry before the page says its sim sends no field.
export const FIELD_EXPECTED_MS = 10000;

/// The rejoin line under the Timing view (the session document's `rejoin`,
/// worked out on the server): the message and what the stop's cost is from.
export function rejoinText(rejoin) {
  if (!rejoin || typeof rejoin.message !== "string") return null;
  const loss = num(rejoin, "pit_loss");
  const stops = num(rejoin, "stops_measured") ?? 0;
  const from = rejoin.pit_loss_from === "stops"
    ? `measured over ${stops} stop${stops === 1 ? "" : "s"}` : "default";
  return loss === null ? rejoin.message : `${rejoin.message} (pit loss ${loss.toFixed(1)} s, ${from})`;
}

/// A tower row's line from its session's field: the car ahead and behind
/// with their gaps, and the rejoin line ("ahead #1 4.0 s · behind #44 1.5 s ·
/// stop now: rejoin P3, 20.5 s behind #44"); null without any of them.
export function aroundText(row) {
  const side = (word, car) => {
    if (!car || typeof car !== "object") return null;
    const gap = num(car, "gap");
    return `${word} ${carName(car)}${gap === null ? "" : ` ${gap.toFixed(1)} s`}`;
  };
  const parts = [side("ahead", row.ahead), side("behind", row.behind),
    typeof row.rejoin === "string" ? row.rejoin : null].filter((p) => p !== null);
  return parts.length ? parts.join(" · ") : null;
}
