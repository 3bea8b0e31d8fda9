//! `/metrics` in the Prometheus text format (0.0.4), encoded by prometheus-client.
//!
//! The service counters stay the atomics `sessions.stats` reads
//! (`server::metrics`); a collector reads them at scrape time, so the hot path
//! keeps one increment per frame and nothing is counted twice. Request counts and
//! latency histograms are prometheus-client metrics registered as they are.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::gateway::GatewayMetrics;
use crate::server::app::App;
use crate::server::health::Health;

/// Renders the registry; built once the processor has started (its counters
/// exist only then). Before that, only the readiness gauge is served.
pub struct Exporter {
    health: Arc<Health>,
    gateway: Option<Arc<GatewayMetrics>>,
    registry: OnceLock<Registry>,
}

impl Exporter {
    pub fn new(health: Arc<Health>, gateway: Option<Arc<GatewayMetrics>>) -> Self {
        Exporter {
            health,
            gateway,
            registry: OnceLock::new(),
        }
    }

    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        match self.health.app() {
            Some(app) => {
                let registry = self
                    .registry
                    .get_or_init(|| registry(app, &self.health, self.gateway.as_deref()));
                prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
            }
            None => {
                let mut registry = Registry::default();
                registry.register_collector(Box::new(Ready(Arc::clone(&self.health))));
                prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
            }
        }
        Ok(text)
    }
}

fn registry(app: &Arc<App>, health: &Arc<Health>, gateway: Option<&GatewayMetrics>) -> Registry {
    let mut registry = Registry::with_prefix("paddock");
    if let Some(gateway) = gateway {
        let sub = registry.sub_registry_with_prefix("gateway");
        sub.register(
            "connections",
            "Socket.IO clients connected to the gateway now",
            gateway.connections.clone(),
        );
        sub.register(
            "rooms",
            "Sessions the gateway follows for Socket.IO dashboards now",
            gateway.rooms.clone(),
        );
        sub.register(
            "events",
            "Socket.IO events the gateway took, by event",
            gateway.events.clone(),
        );
        sub.register(
            "rejected",
            "Socket.IO events the gateway refused, by reason",
            gateway.rejected.clone(),
        );
        sub.register(
            "dropped",
            "Frames a Socket.IO dashboard could not take (its buffer was full)",
            gateway.dropped.clone(),
        );
    }
    registry.register(
        "requests",
        "Requests to the sessions service answered, by endpoint and reply code",
        app.metrics.requests.clone(),
    );
    registry.register(
        "request_duration_seconds",
        "Time from taking a request to sending its reply, by endpoint",
        app.metrics.request_seconds.clone(),
    );
    registry.register_collector(Box::new(Counters(Arc::clone(app))));
    registry.register_collector(Box::new(Ready(Arc::clone(health))));
    registry
}

/// The service counters, read at scrape time.
#[derive(Debug)]
struct Counters(Arc<App>);

impl Collector for Counters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let app = &self.0;
        let m = &app.metrics;
        let s = m.snapshot(app.sessions.load());
        gauge(
            &mut encoder,
            "sessions_live",
            "Live sessions held",
            s.live_sessions as i64,
        )?;
        counter(
            &mut encoder,
            "sessions_created",
            "Sessions this processor learned of (created here, on demand, or by a peer)",
            s.sessions_created,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "sessions_ended",
                "Sessions ended, by why",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (reason, n) in [
                ("deleted", s.sessions_deleted),
                ("expired", s.sessions_expired),
            ] {
                ConstCounter::new(n).encode(family.encode_family(&[("reason", reason)])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "frames",
                "Frames stored, by kind",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (kind, n) in [
                ("telemetry", s.telemetry_frames),
                ("setup", s.setup_frames),
                ("field", s.field_frames),
            ] {
                ConstCounter::new(n).encode(family.encode_family(&[("kind", kind)])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "rejected",
                "Frames and requests refused, by reason",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (reason, n) in &s.rejected {
                ConstCounter::new(*n)
                    .encode(family.encode_family(&[("reason", reason.as_str())])?)?;
            }
        }
        counter(
            &mut encoder,
            "laps_completed",
            "Laps completed",
            s.laps_completed,
        )?;
        gauge(
            &mut encoder,
            "lap_records",
            "Lap records held, of live and ended sessions",
            s.lap_records as i64,
        )?;
        gauge_f64(
            &mut encoder,
            "ingest_rate_hz",
            "Frames per second over the live sessions, recently",
            f64::from(s.ingest_rate_hz),
        )?;
        counter(
            &mut encoder,
            "storage_write_failures",
            "Storage writes refused (the changes are kept and retried)",
            m.storage_write_failures.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "laps_dropped",
            "Lap records not kept: completed faster than --max-lap-rate",
            s.laps_dropped,
        )?;
        counter(
            &mut encoder,
            "laps_trimmed",
            "Lap records dropped oldest first to stay within --max-memory",
            s.laps_trimmed,
        )?;
        counter(
            &mut encoder,
            "laps_unstored",
            "Laps dropped from the full lap writer's queue before they were stored",
            s.laps_unstored,
        )?;
        counter(
            &mut encoder,
            "alerts_unqueued",
            "Alert events announced directly, the alert writer's queue being full",
            s.alerts_unqueued,
        )?;
        counter(
            &mut encoder,
            "trace_frames_recorded",
            "Accepted telemetry frames written to the trace stream",
            s.trace_frames_recorded,
        )?;
        counter(
            &mut encoder,
            "trace_frames_unrecorded",
            "Accepted telemetry frames left out of the trace stream (writer's queue full, or refused)",
            s.trace_frames_unrecorded,
        )?;
        gauge(
            &mut encoder,
            "memory_frame_bytes",
            "Bytes of setups and latest frames held (live and archived sessions)",
            s.memory.frame_bytes as i64,
        )?;
        gauge(
            &mut encoder,
            "memory_lap_bytes",
            "Bytes of lap records held (live and archived sessions)",
            s.memory.lap_bytes as i64,
        )?;
        gauge(
            &mut encoder,
            "memory_budget_bytes",
            "The most frames and lap records may hold (--max-memory)",
            s.memory.budget_bytes as i64,
        )?;
        gauge(
            &mut encoder,
            "over_budget",
            "1 while frames fill --max-memory and new sessions are refused",
            i64::from(s.memory.over_budget),
        )?;
        gauge(
            &mut encoder,
            "ingest_held_bytes",
            "Bytes of frames waiting for the processor in its ingest queue",
            s.ingest.held_bytes as i64,
        )?;
        gauge(
            &mut encoder,
            "ingest_peak_bytes",
            "The most bytes the ingest queue held at once since the start",
            s.ingest.peak_bytes as i64,
        )?;
        gauge(
            &mut encoder,
            "ingest_buffer_bytes",
            "The most the ingest queue may hold (--ingest-buffer-bytes)",
            s.ingest.buffer_bytes as i64,
        )?;
        counter(
            &mut encoder,
            "ingest_dropped",
            "Frames dropped unread because the ingest queue was full",
            s.ingest.dropped,
        )?;
        counter(
            &mut encoder,
            "slow_consumer_drops",
            "Messages the client dropped because the processor fell behind",
            crate::client::connect::slow_consumer_drops(),
        )?;
        Ok(())
    }
}

/// `paddock_ready`: 1 when `/readyz` would answer 200.
#[derive(Debug)]
struct Ready(Arc<Health>);

impl Collector for Ready {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ready = i64::from(self.0.readiness().is_ok());
        gauge(
            &mut encoder,
            "ready",
            "1 when the processor serves (see /readyz)",
            ready,
        )
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge_f64(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}
