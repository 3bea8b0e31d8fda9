//! Drawing the race engineer's view, and the one-line `--plain` rendering.
//! Both are pure functions of [`WatchState`], so tests draw into a fixed-size
//! backend and read the result.

use std::time::Instant;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Chart, Dataset, Gauge, GraphType, Paragraph, Row, Table, Wrap,
};
use serde_json::Value;

use super::state::{Link, WatchState};
use crate::cmd::format;
use crate::protocol::trace;

const CORNERS: [(&str, &str); 4] = [("fl", "FL"), ("fr", "FR"), ("rl", "RL"), ("rr", "RR")];

/// Draws the whole view.
pub fn draw(frame: &mut Frame, state: &WatchState, show_setup: bool, now: Instant) {
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_header(frame, header, state, now);
    frame.render_widget(
        Paragraph::new("q quit · s show/hide setup (instead of the laps)")
            .style(Style::new().fg(Color::DarkGray)),
        footer,
    );

    if let Some(problem) = &state.problem {
        let text = Paragraph::new(problem.as_str())
            .style(Style::new().fg(Color::Red).add_modifier(Modifier::BOLD))
            .block(Block::bordered().title(" session "));
        frame.render_widget(text, body);
        return;
    }
    let Some(t) = &state.telemetry else {
        let text =
            Paragraph::new("waiting for the first telemetry frame…").block(Block::bordered());
        frame.render_widget(text, body);
        return;
    };

    let [top, tyres, rest] = Layout::vertical([
        Constraint::Length(11),
        Constraint::Length(7),
        Constraint::Min(0),
    ])
    .areas(body);
    let [race, fuel] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(top);
    draw_race(frame, race, state, t);
    draw_fuel(frame, fuel, state, t);
    draw_tyres(frame, tyres, t);
    if show_setup {
        let setup = state
            .setup
            .as_ref()
            .map(|s| serde_json::to_string_pretty(s).unwrap_or_default())
            .unwrap_or_else(|| "no setup received".into());
        frame.render_widget(
            Paragraph::new(setup)
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(" setup ")),
            rest,
        );
    } else {
        draw_laps(frame, rest, state);
    }
}

/// The lap history: a table of the last laps that fit, and a lap-time chart.
fn draw_laps(frame: &mut Frame, area: Rect, state: &WatchState) {
    if area.height < 4 {
        return;
    }
    let [table_area, chart_area] =
        Layout::horizontal([Constraint::Length(38), Constraint::Min(0)]).areas(area);
    let best = state.best_lap();
    let fit = usize::from(table_area.height.saturating_sub(3));
    let rows = state.laps.iter().rev().take(fit).map(|l| {
        let time = l.time.map_or("—".into(), seconds_as_lap_time);
        let style = if l.time.is_some() && l.time == best {
            Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD)
        } else {
            Style::new()
        };
        Row::new(vec![
            l.lap.clone(),
            time,
            l.fuel_used.map_or("—".into(), |f| format!("{f:.2} L")),
            if l.pit { "PIT".into() } else { String::new() },
        ])
        .style(style)
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(4),
        ],
    )
    .header(Row::new(["lap", "time", "fuel", "pit"]).style(Style::new().fg(Color::DarkGray)))
    .block(Block::bordered().title(" laps "));
    frame.render_widget(table, table_area);

    let points: Vec<(f64, f64)> = state
        .laps
        .iter()
        .enumerate()
        .filter_map(|(i, l)| Some((i as f64, l.time?)))
        .collect();
    let block = Block::bordered().title(" lap times ");
    if points.len() < 2 {
        frame.render_widget(
            Paragraph::new("a chart once two laps are complete").block(block),
            chart_area,
        );
        return;
    }
    let (lo, hi) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), (_, t)| {
            (lo.min(*t), hi.max(*t))
        });
    let (lo, hi) = (lo.floor() - 1.0, hi.ceil() + 1.0);
    let first = state.laps.first().map_or(String::new(), |l| l.lap.clone());
    let last = state.laps.last().map_or(String::new(), |l| l.lap.clone());
    let chart = Chart::new(vec![
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Cyan))
            .data(&points),
    ])
    .block(block)
    .x_axis(
        Axis::default()
            .bounds([0.0, (state.laps.len() - 1) as f64])
            .labels([format!("lap {first}"), format!("lap {last}")]),
    )
    .y_axis(
        Axis::default()
            .bounds([lo, hi])
            .labels([seconds_as_lap_time(lo), seconds_as_lap_time(hi)]),
    );
    frame.render_widget(chart, chart_area);
}

fn seconds_as_lap_time(s: f64) -> String {
    lap_time(&Value::from(s))
}

fn draw_header(frame: &mut Frame, area: Rect, state: &WatchState, now: Instant) {
    let link = match state.link {
        Link::Connecting => Span::styled("connecting", Style::new().fg(Color::Yellow)),
        Link::Live => Span::styled("live", Style::new().fg(Color::Green)),
        Link::Reconnecting => Span::styled("reconnecting", Style::new().fg(Color::Yellow)),
    };
    let mut spans = vec![Span::raw("link: "), link, Span::raw("  ")];
    if state.is_stale(now) {
        let text = match state.frame_age(now) {
            Some(age) => format!(" STALE: no frame for {} ", format::age(age)),
            None => " STALE: no frame yet ".to_string(),
        };
        spans.push(Span::styled(
            text,
            Style::new()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD),
        ));
    } else if let Some(age) = state.frame_age(now) {
        spans.push(Span::raw(format!("last frame {} ago", format::age(age))));
    }
    if let Some(text) = numbers_text(state) {
        let style = if state.alerts.is_empty() {
            Style::new()
        } else {
            Style::new().fg(Color::White).bg(Color::Red)
        };
        spans.push(Span::raw("  "));
        spans.push(Span::styled(text, style));
    }
    let title = format!(" paddock watch {} ", state.session_id);
    frame.render_widget(
        Paragraph::new(Line::from(spans)).block(Block::bordered().title(title)),
        area,
    );
}

fn draw_race(frame: &mut Frame, area: Rect, state: &WatchState, t: &Value) {
    let field = |label: &str, value: String| {
        Line::from(vec![
            Span::styled(format!("{label:<10}"), Style::new().fg(Color::DarkGray)),
            Span::raw(value),
        ])
    };
    let mut lines = vec![
        field("driver", text(&t["player_name"])),
        field("car", text(&t["car_name"])),
        Line::from(vec![
            Span::styled(format!("{:<10}", "lap"), Style::new().fg(Color::DarkGray)),
            Span::styled(
                format!("Lap {}", number(&t["lap"], 0)),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw("   "),
            Span::styled(
                format!("P{}", number(&t["position"], 0)),
                Style::new().add_modifier(Modifier::BOLD),
            ),
        ]),
        field("lap time", lap_time(&t["lap_time"])),
        Line::from(vec![
            Span::styled(
                format!("{:<10}", "Δ best"),
                Style::new().fg(Color::DarkGray),
            ),
            match state.delta {
                Some(d) => Span::styled(
                    trace::delta_text(d),
                    Style::new()
                        .fg(if d > 0.0 { Color::Red } else { Color::Green })
                        .add_modifier(Modifier::BOLD),
                ),
                None => Span::raw(delta_words(state)),
            },
        ]),
        field("last lap", lap_time(&t["last_lap_time"])),
        field("best lap", lap_time(&t["best_lap_time"])),
    ];
    if let Some(rejoin) = &state.rejoin {
        let style = if rejoin.undercut_window == Some(true) {
            Style::new().fg(Color::Green).add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{:<10}", "pit"), Style::new().fg(Color::DarkGray)),
            Span::styled(rejoin.message.clone(), style),
        ]));
    }
    if t["in_pits"] == true {
        lines.push(Line::styled(
            "IN PITS",
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" race ")),
        area,
    );
}

fn draw_fuel(frame: &mut Frame, area: Rect, state: &WatchState, t: &Value) {
    let block = Block::bordered().title(" fuel ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [gauge, lines] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
    let (fuel, capacity) = (t["fuel"].as_f64(), t["fuel_capacity"].as_f64());
    if let (Some(fuel), Some(capacity)) = (fuel, capacity) {
        let ratio = (fuel / capacity).clamp(0.0, 1.0);
        let color = if ratio < 0.15 {
            Color::Red
        } else {
            Color::Green
        };
        frame.render_widget(
            Gauge::default()
                .ratio(ratio)
                .label(format!("{fuel:.1} / {capacity:.0} L"))
                .gauge_style(Style::new().fg(color)),
            gauge,
        );
    }
    let per_lap = state
        .fuel_per_lap()
        .map_or("—".into(), |b| format!("{b:.2} L"));
    let remaining = state
        .laps_remaining()
        .map_or("— (needs a full lap)".into(), |l| format!("{l:.1} laps"));
    let text = vec![
        Line::raw(""),
        Line::raw(format!("per lap     {per_lap}")),
        Line::from(vec![
            Span::raw("remaining   "),
            Span::styled(remaining, Style::new().add_modifier(Modifier::BOLD)),
        ]),
    ];
    frame.render_widget(Paragraph::new(text), lines);
}

fn draw_tyres(frame: &mut Frame, area: Rect, t: &Value) {
    let rows = CORNERS.iter().map(|(key, label)| {
        let wear = t["tire_wear"][key]
            .as_f64()
            .map_or("—".into(), |w| format!("{:.0}%", w * 100.0));
        Row::new(vec![
            label.to_string(),
            format!("{} °C", number(&t["tire_temps"][key], 1)),
            format!("{} psi", number(&t["tire_pressures"][key], 1)),
            wear,
            format!("{} °C", number(&t["brake_temps"][key], 0)),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(10),
        ],
    )
    .header(
        Row::new(["", "temp", "pressure", "tread", "brake"])
            .style(Style::new().fg(Color::DarkGray)),
    )
    .block(Block::bordered().title(" tyres "));
    frame.render_widget(table, area);
}

/// One line for `--plain`: what the view shows, for pipes and logs.
pub fn plain_line(state: &WatchState, now: Instant) -> String {
    if let Some(problem) = &state.problem {
        return format!("{}: {problem}", state.session_id);
    }
    let age = state
        .frame_age(now)
        .map_or("no frame yet".into(), |a| format!("{} ago", format::age(a)));
    let stale = if state.is_stale(now) { "STALE " } else { "" };
    let Some(t) = &state.telemetry else {
        return format!("{stale}{}: waiting for telemetry ({age})", state.session_id);
    };
    let tyres: Vec<String> = CORNERS
        .iter()
        .map(|(key, label)| {
            format!(
                "{label} {}°C {}psi {}",
                number(&t["tire_temps"][key], 0),
                number(&t["tire_pressures"][key], 1),
                t["tire_wear"][key]
                    .as_f64()
                    .map_or("—".into(), |w| format!("{:.0}%", w * 100.0)),
            )
        })
        .collect();
    let remaining = state
        .laps_remaining()
        .map_or(String::new(), |l| format!(" (~{l:.1} laps)"));
    let finish = numbers_text(state).map_or(String::new(), |text| format!(" | {text}"));
    let rejoin = state
        .rejoin
        .as_ref()
        .map_or(String::new(), |r| format!(" | {}", r.message));
    format!(
        "{stale}lap {} P{} | {} | Δ best {} | fuel {} L{remaining} | {} | frame {age}{rejoin}{finish}",
        number(&t["lap"], 0),
        number(&t["position"], 0),
        lap_time(&t["lap_time"]),
        state
            .delta
            .map_or_else(|| delta_words(state), trace::delta_text),
        number(&t["fuel"], 1),
        tyres.join(", "),
    )
}

/// The live delta when there is none to show: "—" between a reference's
/// points (before the line, past its end), else why there is no reference.
fn delta_words(state: &WatchState) -> String {
    match &state.reference {
        Some(_) => "—".into(),
        None => state.reference_note.clone(),
    }
}

/// Fuel to the finish and the active alerts, as one line of text.
fn numbers_text(state: &WatchState) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(s) = &state.strategy
        && let Some(add) = s.fuel_to_add
    {
        let stop = s
            .last_lap_to_stop
            .map_or(String::new(), |lap| format!(", stop by lap {lap}"));
        // In a long race the total is many stops' worth: the next fill first.
        match (s.next_stop_fuel, s.stops_needed) {
            (Some(next), Some(stops)) if stops > 1 => parts.push(format!(
                "to the finish: add {next:.1} L{stop}, {stops} stops ({add:.1} L in all)"
            )),
            _ => parts.push(format!("to the finish: add {add:.1} L{stop}")),
        }
    }
    if !state.alerts.is_empty() {
        let alerts: Vec<&str> = state.alerts.values().map(|a| a.message.as_str()).collect();
        parts.push(format!("ALERT {}", alerts.join("; ")));
    }
    (!parts.is_empty()).then(|| parts.join(" | "))
}

fn text(v: &Value) -> String {
    v.as_str().map_or("—".into(), str::to_string)
}

fn number(v: &Value, digits: usize) -> String {
    v.as_f64().map_or("—".into(), |n| format!("{n:.digits$}"))
}

fn lap_time(v: &Value) -> String {
    format::lap_time(v.as_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use std::time::Duration;

    fn screen(state: &WatchState, show_setup: bool, now: Instant) -> String {
        let mut terminal = Terminal::new(TestBackend::new(100, 32)).unwrap();
        terminal.draw(|f| draw(f, state, show_setup, now)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn state_with_frame(now: Instant) -> WatchState {
        let mut s = WatchState::new(
            "3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b",
            Duration::from_secs(5),
        );
        let doc = super::super::state::test_document(
            serde_json::json!({"aerodynamics": {"rear_wing": 8}}),
            serde_json::from_str::<Value>(include_str!("../../../tests/data/telemetry-rich.json"))
                .unwrap(),
        );
        s.apply_snapshot(&doc, now);
        s
    }

    #[test]
    fn the_view_shows_lap_position_fuel_and_each_tyre() {
        let now = Instant::now();
        let shown = screen(&state_with_frame(now), false, now);
        for expected in [
            "Lap 14",
            "P3",
            "A. Driver",
            "Oreca 07 Gibson",
            "3:33.456",
            "3:31.902",
            "41.2 / 75 L",
            "FL",
            "85.2 °C",
            "28.5 psi",
            "91%",
            "RR",
            "85.0 °C",
            "92%",
            "last frame 0.0s ago",
            "link: live",
        ] {
            assert!(
                shown.contains(expected),
                "{expected:?} not on screen:\n{shown}"
            );
        }
        assert!(!shown.contains("STALE"), "{shown}");
        assert!(
            !shown.contains("rear_wing"),
            "setup hidden until asked for:\n{shown}"
        );
    }

    #[test]
    fn the_laps_table_and_chart_show_the_history() {
        let now = Instant::now();
        let mut state = state_with_frame(now);
        let records: Vec<crate::protocol::documents::LapRecord<Value>> = (1..=4u64)
            .map(|lap| {
                serde_json::from_value(serde_json::json!({
                    "lap": lap,
                    "started_at": format!("2026-11-24T10:0{lap}:00Z"),
                    "ended_at": format!("2026-11-24T10:0{}:00Z", lap + 1),
                    "frames": 100,
                    "last_frame": {"lap": lap, "in_pits": lap == 3},
                    "next_frame": {"lap": lap + 1, "last_lap_time": 210.0 + lap as f64, "fuel": 70.0 - 5.0 * lap as f64},
                }))
                .unwrap()
            })
            .collect();
        state.apply_laps(&records);
        let shown = screen(&state, false, now);
        for expected in [
            " laps ",
            " lap times ",
            "3:31.000",
            "3:34.000",
            "5.00 L",
            "PIT",
            "lap 1",
            "lap 4",
        ] {
            assert!(
                shown.contains(expected),
                "{expected:?} missing from:\n{shown}"
            );
        }
    }

    #[test]
    fn a_quiet_session_shows_the_stale_banner() {
        let start = Instant::now();
        let state = state_with_frame(start);
        let shown = screen(&state, false, start + Duration::from_secs(7));
        assert!(shown.contains("STALE: no frame for 7.0s"), "{shown}");
        assert!(
            shown.contains("Lap 14"),
            "the last values stay visible:\n{shown}"
        );
    }

    #[test]
    fn the_race_box_shows_the_live_delta_or_why_there_is_none() {
        let now = Instant::now();
        let mut state = state_with_frame(now);
        let shown = screen(&state, false, now);
        assert!(shown.contains("Δ best    no reference lap yet"), "{shown}");
        state.delta = Some(-0.234);
        let shown = screen(&state, false, now);
        assert!(shown.contains("Δ best    −0.234 s"), "{shown}");
        // Still room for every line of the box, and the pits line below.
        assert!(shown.contains("best lap"), "{shown}");
    }

    #[test]
    fn the_setup_is_shown_on_request() {
        let now = Instant::now();
        let shown = screen(&state_with_frame(now), true, now);
        assert!(shown.contains("\"rear_wing\": 8"), "{shown}");
    }

    #[test]
    fn plain_lines_carry_the_same_facts() {
        let start = Instant::now();
        let state = state_with_frame(start);
        let line = plain_line(&state, start);
        assert!(
            line.starts_with("lap 14 P3 | 3:33.456 | Δ best no reference lap yet | fuel 41.2 L"),
            "{line}"
        );
        assert!(line.contains("FL 85°C 28.5psi 91%"), "{line}");
        assert!(plain_line(&state, start + Duration::from_secs(6)).starts_with("STALE "));
    }

    #[test]
    fn the_rejoin_line_shows_on_screen_and_in_plain_lines() {
        let start = Instant::now();
        let mut state = state_with_frame(start);
        assert!(!plain_line(&state, start).contains("rejoin"));
        let mut doc = super::super::state::test_document(
            serde_json::json!({}),
            serde_json::from_str::<Value>(include_str!("../../../tests/data/telemetry-rich.json"))
                .unwrap(),
        );
        doc.rejoin = Some(
            serde_json::from_value(serde_json::json!({
                "pit_loss": 22.0, "pit_loss_from": "stops", "stops_measured": 1, "position": 7,
                "ahead": null, "behind": null, "gap_behind_now": null, "undercut_window": false,
                "message": "stop now: rejoin P7, 2.1 s behind #44"
            }))
            .unwrap(),
        );
        state.apply_numbers(&doc);
        let line = plain_line(&state, start);
        assert!(
            line.contains(" ago | stop now: rejoin P7, 2.1 s behind #44"),
            "{line}"
        );
        let shown = screen(&state, false, start);
        assert!(
            shown.contains("pit       stop now: rejoin P7, 2.1 s behind #44"),
            "{shown}"
        );
        // The next document without a field: the line goes.
        doc.rejoin = None;
        state.apply_numbers(&doc);
        assert!(!screen(&state, false, start).contains("rejoin"));
    }

    #[test]
    fn alerts_and_fuel_to_the_finish_show_until_cleared() {
        let start = Instant::now();
        let mut state = state_with_frame(start);
        state.strategy = serde_json::from_value(serde_json::json!({
            "fuel_per_lap": 3.0, "fuel_per_lap_from": "stint", "lap_time": 100.0,
            "laps_in_tank": 13.7, "race_laps_left": 20.0, "fuel_to_finish": 60.0,
            "fuel_to_add": 21.8, "stops_needed": 1, "reserve_laps": 1.0, "last_lap_to_stop": 26.0
        }))
        .unwrap();
        let event = |state: &str| {
            serde_json::json!({"session_id": uuid::Uuid::new_v4().to_string(), "state": state,
                "kind": "brake_hot", "level": "warning", "value": 720.0, "threshold": 700.0,
                "message": "RL brake at 720 °C", "at": "2026-12-05T07:00:00Z"})
            .to_string()
        };
        state.apply_message("alerts", event("raised").as_bytes(), start);
        let line = plain_line(&state, start);
        assert!(
            line.ends_with(
                "| to the finish: add 21.8 L, stop by lap 26 | ALERT RL brake at 720 °C"
            ),
            "{line}"
        );
        state.apply_message("alerts", event("cleared").as_bytes(), start);
        assert!(!plain_line(&state, start).contains("ALERT"));
        // A long race: the next stop's fill, and the stops it takes.
        let strategy = state.strategy.as_mut().unwrap();
        (
            strategy.fuel_to_add,
            strategy.next_stop_fuel,
            strategy.stops_needed,
        ) = (Some(1757.5), Some(72.0), Some(25));
        let line = plain_line(&state, start);
        assert!(
            line.ends_with(
                "| to the finish: add 72.0 L, stop by lap 26, 25 stops (1757.5 L in all)"
            ),
            "{line}"
        );
    }
}
