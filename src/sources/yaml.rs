//! The block YAML iRacing writes as a file's session info, read into JSON.
//!
//! iRacing's session info is block-style YAML: `key: value` maps nested by
//! indentation and lists of maps (`- key: value`), one scalar per line, no flow
//! collections, anchors or multi-line strings. It is also not always valid
//! YAML — team and driver names go in unquoted, with `:` or a leading `*` or
//! `@` a YAML parser refuses — so a strict parser (and a crate for it) would
//! fail on real files where this one reads every line it can: a line it cannot
//! place is skipped, never an error.
//!
//! Scalars are typed as YAML 1.1 (PyYAML, which pyirsdk's reader uses) types
//! them — integers, floats with their dot, `true`/`yes`/`on` and
//! `false`/`no`/`off`, `null`/`~`/empty — and everything else is a string, so
//! `UpdateCount: 11` reads as 11 and `Camber: -3.15 deg` as "-3.15 deg", as any
//! YAML reader gives them.

use serde_json::{Map, Value};

/// Reads session info text into a JSON object (empty when nothing is readable).
pub fn parse(text: &str) -> Value {
    let lines: Vec<Line> = text.lines().filter_map(Line::of).collect();
    let mut at = 0;
    Value::Object(map_at(&lines, &mut at, 0))
}

/// One meaningful line: its indentation, whether it opens a list item, and the
/// `key: value` (or bare value) after that.
struct Line<'a> {
    indent: usize,
    item: bool,
    key: Option<&'a str>,
    value: &'a str,
}

impl<'a> Line<'a> {
    fn of(raw: &'a str) -> Option<Self> {
        let trimmed = raw.trim_end();
        let body = trimmed.trim_start();
        if body.is_empty() || body == "---" || body == "..." || body.starts_with('#') {
            return None;
        }
        let mut indent = trimmed.len() - body.len();
        let (item, rest) = match body
            .strip_prefix("- ")
            .or(body.strip_prefix('-').filter(|r| r.is_empty()))
        {
            Some(rest) => {
                // The item's own key sits two columns further in.
                indent += 2;
                (true, rest.trim_start())
            }
            None => (false, body),
        };
        let (key, value) = match rest.split_once(": ") {
            Some((k, v)) => (Some(k.trim()), v.trim()),
            None => match rest.strip_suffix(':') {
                Some(k) => (Some(k.trim()), ""),
                None => (None, rest.trim()),
            },
        };
        // `: x` names nothing.
        let key = key.filter(|k| !k.is_empty());
        Some(Line {
            indent,
            item,
            key,
            value,
        })
    }
}

/// The map whose keys sit at `indent`, from `lines[*at]` on.
fn map_at(lines: &[Line], at: &mut usize, indent: usize) -> Map<String, Value> {
    let mut map = Map::new();
    while let Some(line) = lines.get(*at) {
        if line.indent < indent || (line.item && line.indent == indent && !map.is_empty()) {
            break;
        }
        if line.indent > indent {
            // A line deeper than any key here: not placeable, skipped.
            *at += 1;
            continue;
        }
        let Some(key) = line.key else {
            *at += 1;
            continue;
        };
        *at += 1;
        let value = if line.value.is_empty() {
            children(lines, at, indent)
        } else {
            scalar(line.value)
        };
        map.insert(key.to_string(), value);
    }
    map
}

/// What a key with no inline value holds: a nested map, a list, or null.
fn children(lines: &[Line], at: &mut usize, indent: usize) -> Value {
    let Some(next) = lines.get(*at) else {
        return Value::Null;
    };
    if next.item && next.indent >= indent {
        // iRacing writes a list at its key's indentation plus one ("- " then
        // the item's keys two further in).
        let item_indent = next.indent;
        let mut list = Vec::new();
        while let Some(line) = lines.get(*at) {
            if !(line.item && line.indent == item_indent) {
                break;
            }
            if line.key.is_none() {
                list.push(scalar(line.value));
                *at += 1;
                continue;
            }
            list.push(Value::Object(map_at(lines, at, item_indent)));
        }
        Value::Array(list)
    } else if next.indent > indent {
        Value::Object(map_at(lines, at, next.indent))
    } else {
        Value::Null
    }
}

fn scalar(text: &str) -> Value {
    if let Some(quoted) = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .or_else(|| text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')))
    {
        return Value::String(quoted.to_string());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        // YAML 1.1's booleans, as PyYAML (pyirsdk's reader) resolves them.
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
            return Value::Bool(true);
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            return Value::Bool(false);
        }
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let is_int = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    if is_int && let Ok(n) = text.parse::<i64>() {
        return Value::from(n);
    }
    let is_float = digits.bytes().any(|b| b.is_ascii_digit())
        && digits.bytes().all(|b| {
            b.is_ascii_digit() || b == b'.' || b == b'e' || b == b'E' || b == b'-' || b == b'+'
        })
        && digits.bytes().filter(|b| *b == b'.').count() == 1
        && digits.as_bytes()[0] != b'e';
    if is_float && let Ok(f) = text.parse::<f64>() {
        return super::number(f);
    }
    Value::String(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn iracing_session_info_reads_as_yaml_would() {
        let text = "---\nWeekendInfo:\n TrackDisplayName: Red Bull Ring\n TrackID: 403\n \
                    TelemetryOptions:\n  TelemetryDiskFile: \"\"\n\nDriverInfo:\n DriverCarIdx: 0\n \
                    Drivers:\n - CarIdx: 0\n   UserName: Ann: the fast one\n   CarScreenName: Dallara P217\n \
                    - CarIdx: 1\n   UserName: *Bob\n SessionSubType: \nCarSetup:\n UpdateCount: 11\n \
                    Chassis:\n  LeftFront:\n   Camber: -3.15 deg\n   ToeIn: +0.05\n...\n";
        assert_eq!(
            parse(text),
            json!({
                "WeekendInfo": {"TrackDisplayName": "Red Bull Ring", "TrackID": 403,
                                "TelemetryOptions": {"TelemetryDiskFile": ""}},
                "DriverInfo": {"DriverCarIdx": 0,
                               "Drivers": [{"CarIdx": 0, "UserName": "Ann: the fast one",
                                            "CarScreenName": "Dallara P217"},
                                           {"CarIdx": 1, "UserName": "*Bob"}],
                               "SessionSubType": null},
                "CarSetup": {"UpdateCount": 11,
                             "Chassis": {"LeftFront": {"Camber": "-3.15 deg", "ToeIn": 0.05}}}
            })
        );
    }

    #[test]
    fn garbage_reads_as_what_can_be_placed() {
        assert_eq!(parse(""), json!({}));
        assert_eq!(parse("   deep: 1\nTop: 2\n- x\n:\n"), json!({"Top": 2}));
        assert_eq!(scalar("-0.5"), json!(-0.5));
        assert_eq!(scalar("1e5"), json!("1e5"));
        assert_eq!((scalar("Off"), scalar("yes")), (json!(false), json!(true)));
        assert_eq!(scalar("12:00 pm"), json!("12:00 pm"));
        assert_eq!(scalar("2024.05.22.01"), json!("2024.05.22.01"));
    }
}
