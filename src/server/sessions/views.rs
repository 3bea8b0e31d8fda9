//! What the processor's periodic readers take from the map: the pit wall's
//! feed (`server::tower`) and the alerts (`server::alerts`). The tower's input
//! types live here, with the map that fills them, so the tower depends on the
//! map and not the other way round.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::frame::Frame;
use super::map::Sessions;
use crate::protocol::id::SessionId;
use crate::server::laps::LapRecord;

/// Completed laps a car's pace is read from (`race::pace` reads at most as many).
pub const PACE_LAPS: usize = 60;

/// One labelled live session as the tower reads it (`Sessions::team_cars`).
#[derive(Debug, Clone)]
pub struct TeamCar {
    pub session_id: SessionId,
    pub team: String,
    pub car: Option<String>,
    pub created_at: DateTime<Utc>,
    pub telemetry: Option<Frame>,
    /// The last [`PACE_LAPS`] completed laps, oldest first (refcounts).
    pub laps: Vec<Arc<LapRecord>>,
    /// The latest field (every car on track), held to its schema at ingest.
    pub field: Option<Frame>,
    /// What a stop costs the car, as the alerts measured it from all its
    /// laps (`rejoin::loss_of`); `None`: the tower's default. Filled in by
    /// the processor, which holds the alerts' measure.
    pub pit_loss: Option<(f64, &'static str, u32)>,
}

impl Sessions {
    /// Every live session with a team label, as the pit wall's feed reads it
    /// (`server::tower`): refcounts of its latest frame and last few laps.
    pub fn team_cars(&self) -> Vec<TeamCar> {
        let state = self.lock();
        state
            .live
            .iter()
            .filter_map(|(id, s)| {
                Some(TeamCar {
                    session_id: *id,
                    team: s.label.team.clone()?,
                    car: s.label.car.clone(),
                    created_at: s.created_at,
                    telemetry: s.telemetry.clone(),
                    laps: s.laps.latest(PACE_LAPS),
                    field: s.field.clone(),
                    pit_loss: None,
                })
            })
            .collect()
    }

    /// Every live session's team label, latest telemetry frame (a refcount)
    /// and count of completed laps, for the alerts (`server::alerts`).
    #[allow(clippy::type_complexity)]
    pub fn alert_inputs(
        &self,
    ) -> Vec<(SessionId, Option<String>, Option<Frame>, u64, Option<Frame>)> {
        let state = self.lock();
        state
            .live
            .iter()
            .map(|(id, s)| {
                (
                    *id,
                    s.label.team.clone(),
                    s.telemetry.clone(),
                    s.lap.completed,
                    s.field.clone(),
                )
            })
            .collect()
    }
}
