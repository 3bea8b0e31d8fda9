//! What the Race Dashboard's monitor (1Lap) sends, read into paddock's telemetry
//! schema (docs/PROTOCOL.md, "Telemetry schema"). Pure: text in, values out.
//!
//! The origin monitor has two readers that send the same field names in
//! different units:
//!
//! | field            | its LMU/rF2 reader     | its mock reader (Linux, macOS) | schema        |
//! |------------------|------------------------|--------------------------------|---------------|
//! | `tire_pressures` | kPa                    | psi                            | psi           |
//! | `brake_temps`    | Kelvin                 | °C                             | °C            |
//! | `tire_wear`      | fraction left (1 new)  | percent worn (0 new)           | fraction left |
//!
//! Nothing in a frame names its reader, so [`units_of`] tells them apart by
//! plausible ranges (see there); a frame already in the schema's units (psi,
//! °C, fraction left) passes unchanged. Every other field is passed on as sent.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// 0 °C in Kelvin.
const ZERO_CELSIUS_K: f64 = 273.15;
/// Above this a tyre pressure is kPa: racing and road tyres run 15-40 psi,
/// which is 100-280 kPa; nothing runs at 60 psi.
const MAX_PLAUSIBLE_PSI: f64 = 60.0;

/// The units a frame's pressures and brake temperatures are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    /// The origin's LMU/rF2 reader: kPa and Kelvin.
    Sim,
    /// psi and °C: the origin's mock reader, or a frame already in the schema.
    Schema,
}

/// Python's `json` writes `NaN`, `Infinity` and `-Infinity`, which are not JSON.
/// Returns the text with each of those tokens outside strings replaced by `null`
/// (borrowed when there were none, the usual case).
pub fn finite_json(text: &str) -> Cow<'_, str> {
    const TOKENS: [(&str, &str); 3] =
        [("-Infinity", "null"), ("Infinity", "null"), ("NaN", "null")];
    let bytes = text.as_bytes();
    // Fast path: neither token's first letter appears at all.
    if !bytes.iter().any(|b| matches!(b, b'N' | b'I')) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if let Some((token, with)) = TOKENS
            .iter()
            .find(|(token, _)| bytes[i..].starts_with(token.as_bytes()))
        {
            out.push_str(&text[copied..i]);
            out.push_str(with);
            i += token.len();
            copied = i;
            continue;
        }
        i += 1;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// The four corners' numbers of a per-corner object (`{"fl": …, "fr": …, …}`).
fn corners(frame: &Map<String, Value>, key: &str) -> impl Iterator<Item = f64> {
    frame
        .get(key)
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|corners| corners.values().filter_map(Value::as_f64))
}

/// Tells the units apart by what the values can be:
///
/// 1. Tyre pressures, when any is above zero: above 60 they are kPa (the sim),
///    else psi.
/// 2. Otherwise (in the garage the sim reports 0 kPa): tyre wear above 1
///    anywhere is the mock's percent worn, so psi and °C; else the sim.
pub fn units_of(frame: &Map<String, Value>) -> Units {
    let mut pressures = corners(frame, "tire_pressures")
        .filter(|p| *p > 0.0)
        .peekable();
    if pressures.peek().is_some() {
        return if pressures.any(|p| p > MAX_PLAUSIBLE_PSI) {
            Units::Sim
        } else {
            Units::Schema
        };
    }
    if worn_in_percent(frame) {
        Units::Schema
    } else {
        Units::Sim
    }
}

/// Tyre wear above 1 anywhere: percent worn (the mock), not the fraction left.
fn worn_in_percent(frame: &Map<String, Value>) -> bool {
    corners(frame, "tire_wear").any(|w| w > 1.0)
}

/// Converts one origin telemetry frame to the schema's units in place, and says
/// which units it took it for.
///
/// - kPa become psi and Kelvin °C ([`units_of`]); a brake temperature of 0 K
///   or less (no reading) becomes `null`.
/// - A tyre temperature at or below -273.15 °C (the sim's 0 K, converted by
///   the monitor: no reading yet) becomes `null`.
/// - Wear in percent worn (any corner above 1) becomes the fraction left,
///   `1 - worn / 100`.
///
/// A frame already in the schema's units comes out as it went in.
pub fn to_schema(frame: &mut Map<String, Value>) -> Units {
    let units = units_of(frame);
    let percent = worn_in_percent(frame);
    let mut convert = |key: &str, f: &dyn Fn(f64) -> Option<f64>| {
        if let Some(Value::Object(corners)) = frame.get_mut(key) {
            for value in corners.values_mut() {
                // Untouched unless it changes: an integer stays an integer.
                if let Some(v) = value.as_f64()
                    && f(v) != Some(v)
                {
                    *value = f(v)
                        .and_then(serde_json::Number::from_f64)
                        .map_or(Value::Null, Value::Number);
                }
            }
        }
    };
    let round = |v: f64, places: i32| {
        let scale = 10f64.powi(places);
        (v * scale).round() / scale
    };
    convert("tire_temps", &|c| {
        (c > -ZERO_CELSIUS_K + 0.005).then_some(c)
    });
    if units == Units::Sim {
        convert("tire_pressures", &|kpa| {
            Some(round(crate::sources::kpa_to_psi(kpa), 3))
        });
        convert("brake_temps", &|k| {
            (k > 0.0).then(|| round(k - ZERO_CELSIUS_K, 2))
        });
    }
    if percent {
        convert("tire_wear", &|worn| Some(round(1.0 - worn / 100.0, 4)));
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn non_finite_numbers_become_null_outside_strings_only() {
        assert_eq!(finite_json(r#"{"a":1}"#), r#"{"a":1}"#);
        assert!(matches!(finite_json(r#"{"a":"NaN"}"#), Cow::Borrowed(_)));
        assert_eq!(
            finite_json(r#"{"a":NaN,"b":[Infinity,-Infinity],"c":"x\"NaN"}"#),
            r#"{"a":null,"b":[null,null],"c":"x\"NaN"}"#
        );
        let parsed: Value = serde_json::from_str(&finite_json(r#"[NaN, -Infinity]"#)).unwrap();
        assert_eq!(parsed, json!([null, null]));
    }

    fn frame(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_real_lmu_capture_is_read_as_the_sim_and_converted() {
        let sample: Value =
            serde_json::from_str(include_str!("../../tests/data/origin-telemetry-lmu.json"))
                .unwrap();
        let mut t = sample["telemetry"].as_object().unwrap().clone();
        assert_eq!(to_schema(&mut t), Units::Sim);
        // 307.576 K of brake, tyres without a reading, wear as sent.
        assert_eq!(t["brake_temps"]["fl"], json!(34.43));
        assert_eq!(t["tire_temps"]["fl"], Value::Null);
        assert_eq!(t["tire_wear"]["rr"], json!(1.0));
        assert_eq!(t["tire_pressures"]["fl"], json!(0.0));
        assert_eq!(t["player_name"], sample["telemetry"]["player_name"]);
    }

    #[test]
    fn a_running_sim_car_in_kpa_and_kelvin() {
        let mut t = frame(json!({
            "tire_pressures": {"fl": 165.5, "fr": 166.0, "rl": 160.0, "rr": 161.2},
            "brake_temps": {"fl": 873.15, "fr": 0.0, "rl": 700.0, "rr": 650.0},
            "tire_wear": {"fl": 0.93, "fr": 0.92, "rl": 0.95, "rr": 0.95},
            "speed": 251.3
        }));
        assert_eq!(to_schema(&mut t), Units::Sim);
        assert_eq!(t["tire_pressures"]["fl"], json!(24.004));
        assert_eq!(t["brake_temps"]["fl"], json!(600.0));
        assert_eq!(t["brake_temps"]["fr"], Value::Null);
        assert_eq!(t["tire_wear"]["fl"], json!(0.93));
        assert_eq!(t["speed"], json!(251.3));
    }

    #[test]
    fn the_mock_reader_in_psi_celsius_and_percent_worn() {
        // The origin mock's own values.
        let mut t = frame(json!({
            "tire_pressures": {"rl": 23.95, "rr": 23.63, "fl": 24.20, "fr": 23.32},
            "brake_temps": {"rl": 611.19, "rr": 611.50, "fl": 474.79, "fr": 475.18},
            "tire_wear": {"rl": 14.35, "rr": 13.10, "fl": 15.83, "fr": 11.88},
            "tire_temps": {"rl": 70.78, "rr": 68.89, "fl": 75.57, "fr": 66.94}
        }));
        assert_eq!(to_schema(&mut t), Units::Schema);
        assert_eq!(t["tire_pressures"]["fl"], json!(24.2));
        assert_eq!(t["brake_temps"]["rl"], json!(611.19));
        assert_eq!(t["tire_wear"]["rl"], json!(0.8565));
        assert_eq!(t["tire_temps"]["fl"], json!(75.57));
    }

    #[test]
    fn a_frame_in_the_schema_passes_unchanged() {
        let sample: Value =
            serde_json::from_str(include_str!("../../tests/data/telemetry-rich.json")).unwrap();
        let mut t = sample.as_object().unwrap().clone();
        assert_eq!(to_schema(&mut t), Units::Schema);
        assert_eq!(Value::Object(t), sample);
    }

    #[test]
    fn without_pressures_wear_decides() {
        let garage = frame(json!({"tire_pressures": {"fl": 0.0}, "tire_wear": {"fl": 1.0}}));
        assert_eq!(units_of(&garage), Units::Sim);
        let mock = frame(json!({"tire_wear": {"fl": 3.5}}));
        assert_eq!(units_of(&mock), Units::Schema);
        // Nothing to go by: nothing is converted.
        let mut bare = frame(json!({"lap": 3, "tire_pressures": "n/a"}));
        assert_eq!(to_schema(&mut bare), Units::Sim);
        assert_eq!(bare["tire_pressures"], json!("n/a"));
    }
}
