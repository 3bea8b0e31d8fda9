//! Flags several commands share: the connection, durations, the lap field.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::client::connect::ConnectConfig;

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// NATS server URL.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    pub nats_url: String,
    /// A NATS credentials file (JWT and NKey seed), for brokers using
    /// decentralized auth; see deploy/security/.
    #[arg(long, env = "NATS_CREDS", global = true)]
    pub creds: Option<PathBuf>,
    /// User name, for brokers with users and passwords in their configuration
    /// (the shared-secret mode in deploy/security/).
    #[arg(long, env = "NATS_USER", global = true, requires = "password")]
    pub user: Option<String>,
    /// Password for --user.
    #[arg(long, env = "NATS_PASSWORD", global = true, hide_env_values = true)]
    pub password: Option<String>,
    /// CA certificate (PEM) to verify the broker with; makes TLS required.
    #[arg(long, env = "NATS_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), for brokers that verify clients (`verify: true`).
    #[arg(long, env = "NATS_TLS_CERT", global = true, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "NATS_TLS_KEY", global = true, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where this client receives replies: `<prefix>.<connection>.<n>`. With the
    /// roles in deploy/security/, each role may only read its own prefix
    /// (`_INBOX_monitor`, `_INBOX_dashboard`, `_INBOX_ops`).
    #[arg(
        long,
        env = "NATS_INBOX_PREFIX",
        global = true,
        default_value = "_INBOX"
    )]
    pub inbox_prefix: String,
}

impl ConnectArgs {
    /// These flags as they would be typed again, for commands printed for the
    /// user to paste: only those that differ from the defaults (a dashboard's
    /// credentials are not a monitor's, so they are not repeated).
    pub fn as_flags(&self) -> String {
        let mut flags = String::new();
        if self.nats_url != "nats://127.0.0.1:4222" {
            flags.push_str(&format!(" --nats-url {}", self.nats_url));
        }
        for (flag, path) in [
            ("--tls-ca", &self.tls_ca),
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
        ] {
            if let Some(path) = path {
                flags.push_str(&format!(" {flag} {}", path.display()));
            }
        }
        flags
    }

    /// The connection these flags describe.
    pub fn config(&self) -> ConnectConfig {
        ConnectConfig {
            nats_url: self.nats_url.clone(),
            creds: self.creds.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            inbox_prefix: self.inbox_prefix.clone(),
            live: Default::default(),
        }
    }
}

/// `--lap-field`: a pointer, or `None` for "none".
#[derive(Debug, Clone)]
pub struct LapField(pub Option<crate::protocol::payload::Pointer>);

pub fn parse_lap_field(text: &str) -> Result<LapField, String> {
    if text == "none" {
        return Ok(LapField(None));
    }
    crate::protocol::payload::Pointer::parse(text).map(|p| LapField(Some(p)))
}

/// "5s", "500ms", "2m", "1h", or a plain number of seconds.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let input = input.trim();
    let split = input
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(input.len());
    let (number, unit) = input.split_at(split);
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {input:?} (try 5s, 500ms, 2m)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {input:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("not a duration: {input:?}"))
}

/// A duration that must not be zero (a period: `--persist-interval`).
pub fn parse_period(input: &str) -> Result<Duration, String> {
    match parse_duration(input)? {
        d if d.is_zero() => Err(format!("{input:?}: must be more than 0, e.g. 1s or 200ms")),
        d => Ok(d),
    }
}

/// A count that must be at least 1 (sizes, limits, replicas).
/// A size in bytes: `4096`, `64KiB`, `96MiB`, `1GiB` (or `KB`/`MB`/`GB`, also
/// read as powers of 1024, as nats-server reads them).
pub fn parse_bytes(input: &str) -> Result<usize, String> {
    let text = input.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{input:?} is not a size (e.g. 4096, 64KiB, 96MiB, 1GiB)"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{input:?}: unknown unit (use KiB, MiB or GiB)")),
    };
    match n.checked_mul(scale) {
        Some(0) => Err("must be at least 1 byte".into()),
        Some(bytes) => Ok(bytes),
        None => Err(format!("{input:?} is too large")),
    }
}

/// Laps of fuel reserve: a number from 0 to 100.
pub fn parse_reserve(input: &str) -> Result<f64, String> {
    match input.trim().parse::<f64>() {
        Ok(laps) if (0.0..=100.0).contains(&laps) => Ok(laps),
        _ => Err(format!("{input:?} is not a number of laps from 0 to 100")),
    }
}

pub fn parse_count(input: &str) -> Result<usize, String> {
    match input.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{input:?} is not a whole number")),
    }
}

/// Keeps a session's per-session credentials (`--creds` with a session's
/// `.creds`) fresh in the background: renewed through the processor while the
/// session lives, written back to the file, the connection re-established with
/// them. `renewing` is set just before each such planned reconnect. The receiver
/// gets why renewal stopped (the session ended, or these are not renewable
/// credentials).
pub fn keep_credentials_fresh(
    config: &crate::client::connect::ConnectConfig,
    nats: &async_nats::Client,
    id: crate::protocol::id::SessionId,
    role: crate::protocol::subjects::Endpoint,
    renewing: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::sync::mpsc::Receiver<crate::client::creds::Stopped> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let Some(path) = config.creds.clone() else {
        return rx;
    };
    let (nats, live) = (nats.clone(), config.live.clone());
    tokio::spawn(async move {
        let save = move |creds: &str| {
            renewing.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = crate::server::credentials::write_private(&path, creds) {
                tracing::warn!(file = %path.display(), error = %e, "cannot save the renewed credentials");
            }
        };
        let stopped = crate::client::creds::keep_fresh(nats, live, save, id, role).await;
        let _ = tx.send(stopped).await;
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("96MiB"), Ok(96 << 20));
        assert_eq!(parse_bytes("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("1GB"), Ok(1 << 30));
        assert_eq!(parse_bytes("4mib"), Ok(4 << 20));
        assert!(parse_bytes("0").is_err());
        assert!(
            parse_bytes("12 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_bytes("MiB").is_err());
        assert!(
            parse_bytes("99999999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn periods_and_counts_refuse_zero_with_a_reason() {
        assert_eq!(parse_period("200ms"), Ok(Duration::from_millis(200)));
        assert!(parse_period("0").unwrap_err().contains("more than 0"));
        assert_eq!(parse_count("3"), Ok(3));
        assert!(parse_count("0").unwrap_err().contains("at least 1"));
        assert!(parse_count("-1").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
