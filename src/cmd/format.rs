//! Formatting the commands share: ages, lap times, plain-text tables.

use std::time::Duration;

/// 1.5 s → "1.5s", 125 s → "2m05s", 3 h 2 min → "3h02m".
pub fn age(age: Duration) -> String {
    let s = age.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

/// 213.456 s → "3:33.456"; "—" for no time or a negative one.
pub fn lap_time(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) if s >= 0.0 => format!("{}:{:06.3}", (s / 60.0).floor() as u64, s % 60.0),
        _ => "—".into(),
    }
}

/// Left-aligned columns separated by two spaces, one line per row.
pub fn columns(rows: &[Vec<String>]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let widths: Vec<usize> = (0..first.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            format!("{}\n", cells.join("  ").trim_end())
        })
        .collect()
}

/// Columns a QR code may take when the terminal's width is unknown (a pipe):
/// the classic terminal's 80.
pub const QR_COLUMNS: usize = 80;

/// The columns of the terminal on stdout: its own width, else `$COLUMNS`,
/// else [`QR_COLUMNS`].
pub fn terminal_columns() -> usize {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal()
        && let Ok((columns, _)) = ratatui::crossterm::terminal::size()
        && columns > 0
    {
        return usize::from(columns);
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|c| *c > 0)
        .unwrap_or(QR_COLUMNS)
}

/// `text` as the smallest QR code that holds it: the lowest error correction
/// (L), so the fewest modules for a link read off a screen.
fn qr_code(text: &str) -> Option<qrcode::QrCode> {
    qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::L).ok()
}

/// The standard's quiet zone, in modules, on each side.
const QUIET_ZONE: usize = 4;

/// `text` as a QR code drawn with half blocks (two module rows per line, one
/// module per column), dark on a light quiet zone so a phone reads it off a
/// dark terminal too — when it fits in `columns`. When it does not (a link
/// with per-session credentials is over 1,000 characters, a code of some
/// 145 columns), a line saying so, the width it needs and `hint` (where else
/// to get the code), rather than a code wrapped beyond scanning.
pub fn qr(text: &str, columns: usize, hint: &str) -> String {
    let Some(code) = qr_code(text) else {
        return format!("(no QR code: the link is longer than a QR code holds; {hint})\n");
    };
    let needed = code.width() + 2 * QUIET_ZONE;
    if needed > columns {
        return format!(
            "(no QR code: this link needs one {needed} columns wide and the terminal has \
             {columns}; {hint})\n"
        );
    }
    let mut s = code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build();
    s.push('\n');
    s
}

/// `text` as a QR code in SVG (black on white, with its quiet zone), for
/// `sessions share --qr-file`: a code too wide for the terminal, opened in a
/// browser or printed, and scanned from there.
pub fn qr_svg(text: &str) -> Option<String> {
    let code = qr_code(text)?;
    Some(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(400, 400)
            .quiet_zone(true)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_lap_times_read_naturally() {
        assert_eq!(age(Duration::from_millis(1500)), "1.5s");
        assert_eq!(age(Duration::from_secs(125)), "2m05s");
        assert_eq!(age(Duration::from_secs(3 * 3600 + 120)), "3h02m");
        assert_eq!(lap_time(Some(213.456)), "3:33.456");
        assert_eq!(lap_time(None), "—");
        assert_eq!(lap_time(Some(-1.0)), "—");
    }

    /// A link as `sessions share` prints it in per-session mode: the page, the
    /// session, and its credentials (a user JWT of about 1,000 characters).
    fn long_link() -> String {
        let id = "3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b";
        format!(
            "http://127.0.0.1:8081/session/{id}#jwt=eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.{}\
             &seed=SUAM{}&inbox=_INBOX_{id}",
            "x".repeat(1000),
            "A".repeat(54)
        )
    }

    fn widest(text: &str) -> usize {
        text.lines().map(|l| l.chars().count()).max().unwrap_or(0)
    }

    #[test]
    fn a_short_links_qr_code_fits_an_80_column_terminal() {
        let link = "http://127.0.0.1:8081/session/3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b";
        let code = qr(link, QR_COLUMNS, "hint");
        assert!(code.contains('█'), "{code}");
        assert!(widest(&code) <= QR_COLUMNS, "{} columns", widest(&code));
        // Half blocks: two module rows per line, so it is about half as tall as wide.
        assert!(code.lines().count() * 2 <= widest(&code) + 2, "{code}");
    }

    #[test]
    fn a_code_too_wide_for_the_terminal_is_not_drawn_and_says_why() {
        let link = long_link();
        let note = qr(&link, QR_COLUMNS, "use --qr-file");
        assert_eq!(note.lines().count(), 1, "{note}");
        assert!(
            note.contains("columns wide and the terminal has 80") && note.contains("--qr-file"),
            "{note}"
        );
        // In a terminal wide enough it is drawn, as wide as it said.
        let needed: usize = note
            .split("needs one ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(needed > QR_COLUMNS, "{note}");
        let code = qr(&link, needed, "hint");
        assert_eq!(widest(&code), needed);
        // Past what a QR code holds: the note, never a panic.
        assert!(qr(&"x".repeat(8000), 500, "hint").contains("longer than a QR code holds"));
        // As SVG, any size.
        assert!(qr_svg(&link).unwrap().starts_with("<?xml"));
    }

    #[test]
    fn columns_line_up() {
        let rows = vec![
            vec!["A".to_string(), "BB".into()],
            vec!["CCC".into(), "D".into()],
        ];
        assert_eq!(columns(&rows), "A    BB\nCCC  D\n");
    }

    #[test]
    fn a_qr_code_is_drawn_with_half_blocks_and_a_quiet_zone() {
        let code = qr(
            "http://127.0.0.1:8081/session/9bd7ace8-e1ee-4f59-9644-ae24632b7403",
            QR_COLUMNS,
            "hint",
        );
        let lines: Vec<&str> = code.lines().collect();
        // Version 4 (33 modules) plus a 4-module quiet zone each side; two rows a line.
        assert_eq!(lines[0].chars().count(), 33 + 8);
        assert_eq!(lines.len(), (33_usize + 8).div_ceil(2));
        assert!(
            lines[0].chars().all(|c| c == '█'),
            "the quiet zone is light"
        );
    }
}

/// One CSV record (RFC 4180): fields with a comma, quote, CR or LF quoted,
/// quotes doubled; CRLF at the end.
pub fn csv_record<S: AsRef<str>>(fields: &[S]) -> String {
    let quoted: Vec<String> = fields
        .iter()
        .map(|f| {
            let f = f.as_ref();
            if f.contains([',', '"', '\r', '\n']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.to_string()
            }
        })
        .collect();
    format!("{}\r\n", quoted.join(","))
}

/// A number for CSV, empty when absent: whole numbers as integers (`17`, not
/// `17.0`), others in the shortest form that reads back the same — the text
/// JavaScript's `String(n)` gives, so the car page's CSV is the same text.
fn csv_number(value: Option<f64>) -> String {
    let Some(v) = value.filter(|v| v.is_finite()) else {
        return String::new();
    };
    if v.fract() == 0.0 && v.abs() < 1e21 {
        // JavaScript writes whole numbers below 1e21 without a fraction.
        format!("{v:.0}")
    } else {
        serde_json::Value::from(v).to_string()
    }
}

/// [`csv_number`] rounded to `decimals`: figures computed here (sums, means,
/// differences) without float noise such as `-0.09999999999999432`.
fn csv_rounded(value: Option<f64>, decimals: i32) -> String {
    let scale = 10f64.powi(decimals);
    csv_number(value.map(|v| (v * scale).round() / scale))
}

/// A frame's number at `key`, or at `key`/`corner` for per-corner readings.
fn reading(frame: &serde_json::Value, key: &str, corner: Option<&str>) -> Option<f64> {
    let value = &frame[key];
    match corner {
        Some(c) => value[c].as_f64(),
        None => value.as_f64(),
    }
    .filter(|v| v.is_finite())
}

const CORNERS: [&str; 4] = ["fl", "fr", "rl", "rr"];

/// `sessions laps --csv`: a header row (units in the names), then one row
/// per lap with the sim's lap time and what its last frame said at the line.
/// Fuel used is the fall since the previous lap's line (empty for the first
/// lap, and for a lap that refuelled).
/// The channels `sessions export` asks for, and their CSV columns with units
/// (docs/PROTOCOL.md "Telemetry schema").
pub const TRACE_COLUMNS: [(&str, &str); 6] = [
    ("speed", "speed_kmh"),
    ("throttle", "throttle_fraction"),
    ("brake", "brake_fraction"),
    ("steering", "steering_fraction"),
    ("gear", "gear"),
    ("rpm", "rpm_per_min"),
];

/// Recorded laps (`sessions.trace` with `"raw": true`) as RFC 4180 CSV: a
/// header with units, then one row per frame as recorded, lap by lap.
pub fn trace_csv(traces: &[crate::protocol::trace::Trace]) -> String {
    let mut header = vec!["lap", "time_s", "distance_m"];
    header.extend(TRACE_COLUMNS.map(|(_, column)| column));
    let mut out = csv_record(&header);
    for trace in traces {
        let lap = match &trace.lap {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        for k in 0..trace.elapsed_s.len() {
            let mut row = vec![
                lap.clone(),
                csv_number(trace.elapsed_s[k]),
                csv_number(trace.distance_m.get(k).copied().flatten()),
            ];
            for (channel, _) in TRACE_COLUMNS {
                let value = trace
                    .channels
                    .get(channel)
                    .and_then(|v| v.get(k).copied().flatten());
                row.push(csv_number(value));
            }
            out.push_str(&csv_record(&row));
        }
    }
    out
}

pub fn laps_csv(laps: &[crate::protocol::documents::LapRecord<serde_json::Value>]) -> String {
    let mut header: Vec<String> = [
        "lap",
        "lap_time_s",
        "driver",
        "position",
        "fuel_at_line_l",
        "fuel_used_l",
        "in_pits",
    ]
    .map(String::from)
    .to_vec();
    header.extend(CORNERS.map(|c| format!("tyre_temp_{c}_c")));
    header.extend(CORNERS.map(|c| format!("tyre_wear_{c}_fraction_left")));
    header.extend(CORNERS.map(|c| format!("tyre_pressure_{c}_psi")));
    header.extend(CORNERS.map(|c| format!("brake_temp_{c}_c")));
    header.extend(["frames", "started_at", "ended_at"].map(String::from));
    let mut out = csv_record(&header);
    let mut previous_fuel: Option<f64> = None;
    for lap in laps {
        let line = &lap.last_frame;
        let fuel = reading(line, "fuel", None);
        let used = previous_fuel
            .zip(fuel)
            .map(|(b, a)| b - a)
            .filter(|u| *u >= 0.0);
        previous_fuel = fuel;
        let mut row = vec![
            match &lap.lap {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => csv_number(n.as_f64()),
                other => other.to_string(),
            },
            csv_number(reading(&lap.next_frame, "last_lap_time", None)),
            line["player_name"].as_str().unwrap_or_default().to_string(),
            csv_number(reading(line, "position", None)),
            csv_number(fuel),
            csv_number(used.map(|u| (u * 1000.0).round() / 1000.0)),
            lap.pitted.to_string(),
        ];
        for key in ["tire_temps", "tire_wear", "tire_pressures", "brake_temps"] {
            row.extend(CORNERS.map(|c| csv_number(reading(line, key, Some(c)))));
        }
        row.push(lap.frames.to_string());
        row.push(crate::protocol::documents::time::format(&lap.started_at));
        row.push(crate::protocol::documents::time::format(&lap.ended_at));
        out.push_str(&csv_record(&row));
    }
    out
}

/// `sessions stints --csv`.
pub fn stints_csv(stints: &[crate::protocol::documents::Stint]) -> String {
    let mut out = csv_record(&[
        "stint",
        "driver",
        "first_lap",
        "last_lap",
        "laps",
        "start_time_s",
        "end_time_s",
        "duration_s",
        "best_lap_time_s",
        "mean_lap_time_s",
        "green_laps",
        "fuel_used_l",
        "fuel_per_lap_l",
        "ended_by",
    ]);
    for s in stints {
        out.push_str(&csv_record(&[
            s.n.to_string(),
            s.driver.clone().unwrap_or_default(),
            csv_number(s.first_lap),
            csv_number(s.last_lap),
            s.laps.to_string(),
            csv_rounded(s.start_time_s, 3),
            csv_rounded(s.end_time_s, 3),
            csv_rounded(s.duration_s, 3),
            csv_rounded(s.best_lap_time, 3),
            csv_rounded(s.mean_lap_time, 3),
            s.green_laps.to_string(),
            csv_rounded(s.fuel_used, 3),
            csv_rounded(s.fuel_per_lap, 3),
            s.ended_by.clone().unwrap_or_default(),
        ]));
    }
    out
}

/// `sessions stints`: the stints as a table.
pub fn stints_table(stints: &[crate::protocol::documents::Stint]) -> String {
    if stints.is_empty() {
        return "no completed laps\n".into();
    }
    let laps = |v: Option<f64>| v.map_or("—".into(), |v| v.to_string());
    let mut rows = vec![
        [
            "STINT", "DRIVER", "LAPS", "FROM", "TO", "TIME", "BEST", "MEAN", "FUEL/LAP", "ENDED BY",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for s in stints {
        rows.push(vec![
            s.n.to_string(),
            s.driver.clone().unwrap_or_else(|| "—".into()),
            s.laps.to_string(),
            laps(s.first_lap),
            laps(s.last_lap),
            s.duration_s
                .map_or("—".into(), |d| age(Duration::from_secs_f64(d.max(0.0)))),
            lap_time(s.best_lap_time),
            lap_time(s.mean_lap_time),
            s.fuel_per_lap.map_or("—".into(), |f| format!("{f:.2} L")),
            s.ended_by.clone().unwrap_or_else(|| "running".into()),
        ]);
    }
    columns(&rows)
}

/// "+1.234" for an interval, "—" for none.
fn gap(seconds: Option<f64>) -> String {
    seconds.map_or("—".into(), |s| format!("+{s:.3}"))
}

/// `sessions field`: the field as a timing tower, leader first.
pub fn field_table(field: &crate::protocol::field::Field) -> String {
    if field.cars.is_empty() {
        return "no cars\n".into();
    }
    let or_dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "—".into());
    let mut rows = vec![
        [
            "POS", "CLASS", "#", "DRIVER", "TEAM", "LAP", "GAP", "INT", "LAST", "BEST", "PITS",
            "TYRE", "STATUS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for car in &field.cars {
        let class = match (&car.class, car.class_position) {
            (Some(class), Some(p)) => format!("{class} {p}"),
            _ => "—".into(),
        };
        let tyre = match (&car.tyre, car.tyre_age_laps) {
            (Some(t), Some(age)) => format!("{t} ({age})"),
            (Some(t), None) => t.clone(),
            _ => "—".into(),
        };
        let status = serde_json::to_value(car.status)
            .ok()
            .and_then(|s| s.as_str().map(String::from))
            .unwrap_or_default();
        rows.push(vec![
            format!("{}{}", car.position, if car.player { "*" } else { "" }),
            class,
            car.race_number.map_or("—".into(), |n| n.to_string()),
            or_dash(&car.driver),
            or_dash(&car.team),
            car.lap.map_or("—".into(), |l| l.to_string()),
            gap(car.gap_leader),
            gap(car.interval),
            lap_time(car.last_lap),
            lap_time(car.best_lap),
            car.pit_stops.map_or("—".into(), |n| n.to_string()),
            tyre,
            status,
        ]);
    }
    columns(&rows)
}

/// `sessions field --csv`: one row per car, leader first.
pub fn field_csv(field: &crate::protocol::field::Field) -> String {
    let mut out = csv_record(&[
        "position",
        "class",
        "class_position",
        "index",
        "race_number",
        "driver",
        "team",
        "lap",
        "gap_leader_s",
        "interval_s",
        "last_lap_s",
        "best_lap_s",
        "in_pits",
        "pit_stops",
        "tyre",
        "tyre_age_laps",
        "penalties_s",
        "status",
        "player",
    ]);
    let n = |v: Option<u32>| v.map_or(String::new(), |v| v.to_string());
    for car in &field.cars {
        let status = serde_json::to_value(car.status)
            .ok()
            .and_then(|s| s.as_str().map(String::from))
            .unwrap_or_default();
        out.push_str(&csv_record(&[
            car.position.to_string(),
            car.class.clone().unwrap_or_default(),
            n(car.class_position.map(u32::from)),
            car.index.to_string(),
            n(car.race_number),
            car.driver.clone().unwrap_or_default(),
            car.team.clone().unwrap_or_default(),
            n(car.lap),
            csv_number(car.gap_leader),
            csv_number(car.interval),
            csv_number(car.last_lap),
            csv_number(car.best_lap),
            car.in_pits.to_string(),
            n(car.pit_stops),
            car.tyre.clone().unwrap_or_default(),
            n(car.tyre_age_laps),
            csv_number(car.penalties_s),
            status,
            car.player.to_string(),
        ]));
    }
    out
}

#[cfg(test)]
mod csv_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_numbers_are_written_as_javascript_writes_them() {
        assert_eq!(csv_number(Some(17.0)), "17");
        assert_eq!(csv_number(Some(-2.0)), "-2");
        assert_eq!(csv_number(Some(0.0)), "0");
        assert_eq!(csv_number(Some(40.25)), "40.25");
        assert_eq!(csv_number(Some(0.1 + 0.2)), "0.30000000000000004");
        assert_eq!(csv_number(None), "");
        assert_eq!(csv_number(Some(f64::NAN)), "");
        assert_eq!(csv_rounded(Some(2.9 - 3.0), 3), "-0.1");
        assert_eq!(csv_rounded(Some(100.00000000001), 3), "100");
    }

    #[test]
    fn the_laps_csv_writes_positions_and_laps_as_integers() {
        let record: crate::protocol::documents::LapRecord<serde_json::Value> =
            serde_json::from_value(json!({
                "lap": 3.0,
                "started_at": "2026-12-05T07:45:01.000000Z",
                "ended_at": "2026-12-05T07:46:41.000000Z",
                "frames": 100,
                "last_frame": {"position": 17.0, "fuel": 40.0, "player_name": "Ann"},
                "next_frame": {"last_lap_time": 100.5},
                "pitted": false,
            }))
            .unwrap();
        let csv = laps_csv(&[record]);
        let row = csv.lines().nth(1).unwrap();
        assert!(row.starts_with("3,100.5,Ann,17,40,,false,"), "{csv}");
    }

    #[test]
    fn the_stints_csv_rounds_away_float_noise() {
        let stint: crate::protocol::documents::Stint = serde_json::from_value(json!({
            "n": 1, "driver": "Ann", "first_lap": 1.0, "last_lap": 5.0, "laps": 5,
            "start_time_s": 0.0, "end_time_s": 530.0000000000001,
            "duration_s": 530.0000000000001, "best_lap_time": 100.0,
            "mean_lap_time": 100.33333333333333, "green_laps": 4,
            "fuel_used": -0.09999999999999432, "fuel_per_lap": 3.0, "ended_by": "pit_stop"
        }))
        .unwrap();
        let csv = stints_csv(&[stint]);
        assert_eq!(
            csv.lines().nth(1).unwrap(),
            "1,Ann,1,5,5,0,530,530,100,100.333,4,-0.1,3,pit_stop"
        );
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(csv_record(&["a", "b c"]), "a,b c\r\n");
        assert_eq!(
            csv_record(&["x,y", "say \"hi\"", "two\nlines"]),
            "\"x,y\",\"say \"\"hi\"\"\",\"two\nlines\"\r\n"
        );
    }
}
