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

/// `text` as a QR code drawn with half blocks (two rows per line), dark on a
/// light quiet zone so a phone reads it off a dark terminal too.
pub fn qr(text: &str) -> String {
    match qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::L) {
        Ok(code) => {
            let mut s = code
                .render::<qrcode::render::unicode::Dense1x2>()
                .dark_color(qrcode::render::unicode::Dense1x2::Light)
                .light_color(qrcode::render::unicode::Dense1x2::Dark)
                .quiet_zone(true)
                .build();
            s.push('\n');
            s
        }
        // Longer than a QR code holds: the link alone is printed.
        Err(_) => String::new(),
    }
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
        let code = qr("http://127.0.0.1:8081/session/9bd7ace8-e1ee-4f59-9644-ae24632b7403");
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
