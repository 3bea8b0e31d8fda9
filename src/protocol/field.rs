//! The field: every car on track, as a monitor publishes it on
//! `session.<id>.field` (docs/field.schema.json, docs/PROTOCOL.md "The field").
//!
//! Telemetry is the driver's own car at up to 60 Hz and the processor takes any
//! JSON object for it; the field is every other car too, a few times a second,
//! and readers (the Timing view, the tower's neighbours, the rejoin estimate,
//! `sessions field`) index into it by position and car. So it has a shape the
//! processor holds it to, here, before it is kept: at most [`MAX_CARS`] cars,
//! names of at most [`MAX_NAME`] bytes, one entry per car index, positions in
//! range. A field is small (128 cars are some 40 KB) and rare (2 Hz), so it is
//! read with serde into these types, not by the frame path's allocation-free
//! pass; it is kept byte for byte as sent, like a frame.

use serde::{Deserialize, Serialize};

/// Most cars a field may hold: more than any grid a sim runs (ACC 2025: 120
/// entries on a server; F1: 22).
pub const MAX_CARS: usize = 128;
/// Longest driver, team, class or game name, in bytes.
pub const MAX_NAME: usize = 64;
/// Most sector times a car carries.
pub const MAX_SECTORS: usize = 8;

/// Where a car is, as the field says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CarStatus {
    /// On track (out-lap and in-lap included).
    Running,
    /// In the pit lane or the pit box.
    Pitting,
    /// Took the chequered flag.
    Finished,
    /// Out of the race: retired, disqualified, not classified.
    Retired,
}

/// One car of the field. `null` or absent: the game does not say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldCar {
    /// The game's own index of the car (F1: 0-21; ACC: its car id); unique in a field.
    pub index: u16,
    #[serde(default)]
    pub race_number: Option<u32>,
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    /// Its class (ACC: GT3, GT4, …); `null` where all run as one.
    #[serde(default)]
    pub class: Option<String>,
    /// Overall position, 1 first.
    pub position: u16,
    /// Position within its class (its overall position where there are none).
    #[serde(default)]
    pub class_position: Option<u16>,
    /// The lap being driven.
    #[serde(default)]
    pub lap: Option<u32>,
    /// m into the lap.
    #[serde(default)]
    pub lap_distance: Option<f64>,
    /// s, the last completed lap.
    #[serde(default)]
    pub last_lap: Option<f64>,
    /// s, its best lap this session.
    #[serde(default)]
    pub best_lap: Option<f64>,
    /// s, the sectors of the running lap so far (F1) or of the last lap (ACC).
    #[serde(default)]
    pub sector_times: Vec<Option<f64>>,
    /// s behind the leader (0 for the leader).
    #[serde(default)]
    pub gap_leader: Option<f64>,
    /// s behind the car one position ahead.
    #[serde(default)]
    pub interval: Option<f64>,
    #[serde(default)]
    pub in_pits: bool,
    #[serde(default)]
    pub pit_stops: Option<u32>,
    /// Tyre compound, as the game names it (soft, medium, wet, …).
    #[serde(default)]
    pub tyre: Option<String>,
    #[serde(default)]
    pub tyre_age_laps: Option<u32>,
    /// s of time penalties to serve or added.
    #[serde(default)]
    pub penalties_s: Option<f64>,
    pub status: CarStatus,
    /// The car this monitor's driver drives (where the game says which).
    #[serde(default)]
    pub player: bool,
}

/// Every car on track, as one message on `session.<id>.field`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Field {
    /// When the monitor read it (RFC 3339).
    #[serde(default)]
    pub timestamp: Option<chrono::DateTime<chrono::Utc>>,
    /// The game that sent it (`F1 24`, `ACC`).
    #[serde(default)]
    pub game: Option<String>,
    /// m, one lap of the track (what a gap in metres is turned into seconds by).
    #[serde(default)]
    pub track_length: Option<f64>,
    /// By position, leader first (readers may rely on it).
    pub cars: Vec<FieldCar>,
}

/// Why a field was refused: the processor answers it as a 400 and counts it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("field: {0}")]
    Shape(String),
    #[error("field: {0} cars, at most {MAX_CARS}")]
    TooManyCars(usize),
    #[error("field: car {index}: {what}")]
    Car { index: u16, what: String },
}

impl Field {
    /// Reads and checks a field as published (a JSON object, already within
    /// `--max-payload`).
    pub fn parse(bytes: &[u8]) -> Result<Field, FieldError> {
        let field: Field =
            serde_json::from_slice(bytes).map_err(|e| FieldError::Shape(e.to_string()))?;
        field.check()?;
        Ok(field)
    }

    /// What the readers rely on: bounded, one entry per car, positions in
    /// range and in order, numbers finite.
    pub fn check(&self) -> Result<(), FieldError> {
        if self.cars.len() > MAX_CARS {
            return Err(FieldError::TooManyCars(self.cars.len()));
        }
        if self.game.as_ref().is_some_and(|g| g.len() > MAX_NAME) {
            return Err(FieldError::Shape(format!(
                "game longer than {MAX_NAME} bytes"
            )));
        }
        if self.track_length.is_some_and(|l| !l.is_finite() || l < 0.0) {
            return Err(FieldError::Shape("track_length not a length".into()));
        }
        let mut seen = std::collections::HashSet::with_capacity(self.cars.len());
        let mut last_position = 0;
        for car in &self.cars {
            let bad = |what: String| FieldError::Car {
                index: car.index,
                what,
            };
            if !seen.insert(car.index) {
                return Err(bad("listed twice".into()));
            }
            if car.position == 0 || usize::from(car.position) > MAX_CARS {
                return Err(bad(format!(
                    "position {} not in 1..={MAX_CARS}",
                    car.position
                )));
            }
            if car.position < last_position {
                return Err(bad("cars are not in order of position".into()));
            }
            last_position = car.position;
            for (name, text) in [
                ("driver", &car.driver),
                ("team", &car.team),
                ("class", &car.class),
                ("tyre", &car.tyre),
            ] {
                if text.as_ref().is_some_and(|t| t.len() > MAX_NAME) {
                    return Err(bad(format!("{name} longer than {MAX_NAME} bytes")));
                }
            }
            if car.sector_times.len() > MAX_SECTORS {
                return Err(bad(format!("more than {MAX_SECTORS} sector times")));
            }
            // serde_json reads no NaN or infinity, but a negative time is no time.
            let times = [
                car.last_lap,
                car.best_lap,
                car.gap_leader,
                car.interval,
                car.penalties_s,
                car.lap_distance,
            ];
            if times
                .into_iter()
                .chain(car.sector_times.iter().copied())
                .flatten()
                .any(|t| t < 0.0)
            {
                return Err(bad("a negative time or distance".into()));
            }
        }
        Ok(())
    }

    /// The car at `index`, if it is in the field.
    pub fn car(&self, index: u16) -> Option<&FieldCar> {
        self.cars.iter().find(|c| c.index == index)
    }

    /// The car the monitor's driver drives, where the game says which.
    pub fn player(&self) -> Option<&FieldCar> {
        self.cars.iter().find(|c| c.player)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn car(index: u16, position: u16) -> serde_json::Value {
        json!({"index": index, "position": position, "status": "running"})
    }

    #[test]
    fn a_field_reads_and_is_held_to_its_bounds() {
        let ok = json!({"game": "F1 24", "cars": [car(3, 1), car(0, 2)]});
        let field = Field::parse(ok.to_string().as_bytes()).unwrap();
        assert_eq!(field.cars[1].index, 0);
        assert_eq!(field.car(3).unwrap().position, 1);

        let refused = |v: serde_json::Value| Field::parse(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(
            refused(json!({"cars": [car(1, 1), car(1, 2)]})).to_string(),
            "field: car 1: listed twice"
        );
        assert!(matches!(
            refused(json!({"cars": (0..129).map(|i| car(i, 1)).collect::<Vec<_>>()})),
            FieldError::TooManyCars(129)
        ));
        assert!(
            refused(json!({"cars": [car(1, 2), car(2, 1)]}))
                .to_string()
                .contains("order")
        );
        assert!(
            refused(json!({"cars": [car(1, 0)]}))
                .to_string()
                .contains("position 0")
        );
        let mut long = car(1, 1);
        long["driver"] = json!("x".repeat(65));
        assert!(
            refused(json!({"cars": [long]}))
                .to_string()
                .contains("driver")
        );
        let mut negative = car(1, 1);
        negative["interval"] = json!(-1.0);
        assert!(
            refused(json!({"cars": [negative]}))
                .to_string()
                .contains("negative")
        );
        let mut unknown = car(1, 1);
        unknown["status"] = json!("flying");
        assert!(matches!(
            refused(json!({"cars": [unknown]})),
            FieldError::Shape(_)
        ));
        assert!(matches!(refused(json!({"nope": 1})), FieldError::Shape(_)));
        // 128 cars are a field.
        let full: Vec<_> = (0..128).map(|i| car(i, i + 1)).collect();
        Field::parse(json!({"cars": full}).to_string().as_bytes()).unwrap();
    }
}
