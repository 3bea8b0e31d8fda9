//! The telemetry schema (docs/telemetry.schema.json) held to what paddock's own
//! monitors send: the simulated car through two hours (pit stops included), the
//! samples, and the Race Dashboard monitor's frames as the gateway converts them.
//! No broker: these are pure.

use paddock::gateway::origin::to_schema;
use serde_json::{Value, json};

use crate::support::*;

fn validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(include_str!("../../docs/telemetry.schema.json")).unwrap();
    jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
}

fn assert_valid(validator: &jsonschema::Validator, frame: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(frame)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:?}\n{frame}");
}

#[test]
fn the_simulated_car_and_the_samples_follow_the_schema() {
    let validator = validator();
    let mut race = paddock::cmd::sim::Race::new(7);
    let mut pitted = false;
    // Two hours of race time at 1 Hz: laps, fuel running down, pit stops.
    for second in 0..7200 {
        let frame = race.step(1.0);
        pitted |= race.in_pits();
        assert_valid(
            &validator,
            &frame,
            &format!("simulated frame at {second} s"),
        );
    }
    assert!(pitted, "two hours include a pit stop");
    for (name, text) in [
        ("telemetry.json", TELEMETRY),
        ("telemetry-rich.json", TELEMETRY_RICH),
    ] {
        assert_valid(&validator, &serde_json::from_str(text).unwrap(), name);
    }
}

#[test]
fn the_origin_monitors_frames_follow_it_once_converted_and_not_before() {
    let validator = validator();
    let capture: Value =
        serde_json::from_str(include_str!("../data/origin-telemetry-lmu.json")).unwrap();
    // On track: the capture with the pressures and brakes a running car has.
    let mut running = capture["telemetry"].clone();
    running["tire_pressures"] = json!({"fl": 172.0, "fr": 171.0, "rl": 165.0, "rr": 166.0});
    running["brake_temps"] = json!({"fl": 1023.0, "fr": 1020.0, "rl": 900.0, "rr": 905.0});
    assert!(
        !validator.is_valid(&running),
        "kPa are not psi: the schema must catch an unconverted frame"
    );
    for (what, frame) in [
        ("the LMU capture", capture["telemetry"].clone()),
        ("on track", running),
    ] {
        let mut frame = frame.as_object().unwrap().clone();
        to_schema(&mut frame);
        assert_valid(&validator, &Value::Object(frame), what);
    }
    // The origin's mock reader: percent worn is not a fraction left.
    let mock = json!({
        "lap": 2, "tire_pressures": {"rl": 23.95, "rr": 23.63, "fl": 24.2, "fr": 23.32},
        "brake_temps": {"rl": 611.19, "rr": 611.5, "fl": 474.79, "fr": 475.18},
        "tire_wear": {"rl": 14.35, "rr": 13.1, "fl": 15.83, "fr": 11.88}
    });
    assert!(!validator.is_valid(&mock));
    let mut converted = mock.as_object().unwrap().clone();
    to_schema(&mut converted);
    assert_valid(&validator, &Value::Object(converted), "the mock");
}

#[test]
fn the_sim_bridges_frames_follow_it() {
    use paddock::sources::{acc, f1, forza, gt7, ibt, iracing_live, lmu};
    let validator = validator();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    for (dir, files) in [
        ("f1-24", ["01", "02", "04", "05", "06", "07", "10"]),
        (
            "f1-25",
            [
                "Session",
                "LapData",
                "Participants",
                "CarSetups",
                "CarTelemetry",
                "CarStatus",
                "CarDamage",
            ],
        ),
    ] {
        let mut decoder = f1::Decoder::new();
        for file in files {
            decoder.read(&std::fs::read(format!("{data}/{dir}/{file}.bin")).unwrap());
            if let Some(frame) = decoder.frame() {
                assert_valid(&validator, &frame, &format!("{dir} after {file}"));
            }
        }
    }
    // Forza's and GT7's packets built from their layouts (tests/data/README.md).
    for layout in ["sled", "dash", "motorsport", "horizon"] {
        let mut decoder = forza::Decoder::new();
        assert!(decoder.read(&std::fs::read(format!("{data}/forza/{layout}.bin")).unwrap()));
        assert_valid(
            &validator,
            &decoder.frame().unwrap(),
            &format!("forza {layout}"),
        );
    }
    for format in ["a", "b", "tilde"] {
        let mut decoder = gt7::Decoder::new();
        assert!(decoder.read(&std::fs::read(format!("{data}/gt7/{format}.packet.bin")).unwrap()));
        assert_valid(
            &validator,
            &decoder.frame().unwrap(),
            &format!("gt7 {format}"),
        );
    }
    // ACC's pages and iRacing's live map, built from their layouts.
    let (physics, graphics, statics) = acc::build::pages(2, 1);
    let mut decoder = acc::Decoder::new("Assetto Corsa Competizione");
    assert!(decoder.read(acc::Pages {
        physics: &physics,
        physics_id_after: 2,
        graphics: &graphics,
        graphics_id_after: 1,
        statics: &statics,
    }));
    assert_valid(&validator, &decoder.frame().unwrap(), "acc");
    let map = iracing_live::build::race();
    let mut decoder = iracing_live::Decoder::new();
    assert!(decoder.read(&map, &map[..iracing_live::HEADER_LEN]));
    assert_valid(&validator, &decoder.frame().unwrap(), "iracing live");
    // LMU's rF2 plugin buffers, built from their layout.
    let (telemetry, scoring) = lmu::build::race(3, 4);
    let mut decoder = lmu::Decoder::new();
    let read = decoder.read(lmu::Buffers {
        telemetry: &telemetry,
        telemetry_after: lmu::Versions { begin: 3, end: 3 },
        scoring: &scoring,
        scoring_after: lmu::Versions { begin: 4, end: 4 },
    });
    assert_eq!(read, lmu::Read::Frame);
    assert_valid(&validator, &decoder.frame().unwrap(), "lmu");
    let file =
        ibt::Ibt::parse(std::fs::read(format!("{data}/ibt/valid_test_file.ibt")).unwrap()).unwrap();
    for row in 0..file.rows() {
        assert_valid(
            &validator,
            &file.frame(row, file.speed_kmh(row)),
            &format!("ibt row {row}"),
        );
    }
}
