//! `paddock sessions …`: ops through the broker only. Tables for people, `--json`
//! for scripts; a refusal or a missing processor is an error with the reason.

use std::io::Write;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::args::{ConnectArgs, parse_duration};
use super::format;
use crate::client::SessionsClient;
use crate::client::connect::connect_once;
use crate::protocol::documents::{LapRecord, SessionDocument, SessionSummary, Stats};
use crate::protocol::subjects::Endpoint;

#[derive(Debug, Clone, Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print JSON instead of tables, for scripts: the processor's reply (for
    /// `renew`, `{session_id, role, file, expires_at}`: the credentials go to
    /// the file, not to the terminal; for `share`, `{session_id, link,
    /// link_id}`, and for `share --team`, `{team, link, link_id, expires_at}`).
    #[arg(long, env = "PADDOCK_JSON", global = true)]
    pub json: bool,
    /// How long to wait for a reply (e.g. 5s, 500ms).
    #[arg(long, env = "PADDOCK_TIMEOUT", default_value = "5s", value_parser = parse_duration, global = true)]
    pub timeout: Duration,
    #[command(subcommand)]
    pub command: SessionsCommand,
}

/// What `sessions export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// RFC 4180 CSV, a header row with units.
    Csv,
    /// MoTeC i2: `.ld` (every channel at the frames' rate) and `.ldx` (a
    /// beacon at each line crossing), into --out (or the current directory).
    Motec,
}

#[derive(Debug, Clone, Subcommand)]
pub enum SessionsCommand {
    /// A new session; prints its id. When the processor issues per-session
    /// credentials, they are written into --credentials-dir as
    /// <id>-monitor.creds and <id>-dashboard.creds.
    Create {
        /// Where to save a new session's monitor and dashboard credentials, when
        /// the processor issues them (`<id>-monitor.creds`, `<id>-dashboard.creds`).
        #[arg(long, env = "PADDOCK_CREDENTIALS_DIR", default_value = ".")]
        credentials_dir: PathBuf,
        #[command(flatten)]
        label: LabelArgs,
    },
    /// Every live session, oldest first.
    List {
        /// One team's sessions only.
        #[arg(long, env = "PADDOCK_TEAM")]
        team: Option<String>,
    },
    /// One session: setup, latest telemetry, statistics.
    Get { session_id: String },
    /// End a session (its monitor's later data is refused).
    Delete { session_id: String },
    /// Change a live session's team or car label (an empty value clears it).
    Label {
        session_id: String,
        /// The new team label.
        #[arg(long, env = "PADDOCK_TEAM")]
        team: Option<String>,
        /// The new car label.
        #[arg(long, env = "PADDOCK_CAR")]
        car: Option<String>,
    },
    /// A session's completed laps, oldest first: lap, lap time, frames, fuel.
    Laps {
        session_id: String,
        /// Only laps numbered at least this.
        #[arg(long, env = "PADDOCK_FROM_LAP")]
        from_lap: Option<f64>,
        /// From the archive (a deleted or expired session).
        #[arg(long, env = "PADDOCK_ARCHIVED")]
        archived: bool,
        /// As CSV (RFC 4180, a header row with units): one row per lap, with
        /// the driver, fuel and tyres at the line, for a spreadsheet.
        #[arg(long, env = "PADDOCK_CSV")]
        csv: bool,
    },
    /// The field: every car on track as the session's monitor last sent it
    /// (`--source f1`, `acc-broadcast`), by position: gaps, intervals, last
    /// and best laps, pit stops, tyres, status. --json prints it as sent.
    Field {
        session_id: String,
        /// As CSV (RFC 4180, a header row with units): one row per car.
        #[arg(long, env = "PADDOCK_CSV")]
        csv: bool,
    },
    /// A session's stints (between pit stops and driver changes), live or
    /// ended: driver, laps, times, best and mean lap, fuel used, why it ended.
    Stints {
        session_id: String,
        /// As CSV (RFC 4180, a header row with units).
        #[arg(long, env = "PADDOCK_CSV")]
        csv: bool,
    },
    /// A session's recorded laps as CSV, one row per frame as the broker
    /// recorded it (not resampled), with units in the header: time_s,
    /// distance_m, speed_kmh, throttle, brake, steering, gear, rpm; or as
    /// MoTeC i2 files (`--format motec`: one `.ld` with its `.ldx`).
    Export {
        session_id: String,
        /// Which lap: its number, `best` (the fastest), or `all` (every
        /// completed lap the session keeps).
        #[arg(long, env = "PADDOCK_EXPORT_LAP", default_value = "all")]
        lap: String,
        /// The file format.
        #[arg(long, env = "PADDOCK_EXPORT_FORMAT", value_enum, default_value = "csv")]
        format: ExportFormat,
        /// Write `<id>-lap<N>.csv` per lap into this directory (made if
        /// missing) instead of one CSV on standard output; MoTeC files go
        /// here too (`<id>-lap<N>.ld` and `.ldx`, or `<id>.ld` for every lap).
        #[arg(long, env = "PADDOCK_EXPORT_OUT")]
        out: Option<PathBuf>,
    },
    /// Service-wide counters.
    Stats,
    /// Ended sessions (deleted or expired), kept for serve's
    /// --archive-retention with their final state.
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// Fresh credentials for a live session's monitor or dashboard (per-session
    /// mode), written to <--credentials-dir>/<id>-<role>.creds: for a monitor whose
    /// saved credentials ran out while it was stopped.
    Renew {
        session_id: String,
        /// Whose credentials: the session's monitor or its dashboard.
        #[arg(long, env = "PADDOCK_ROLE", value_enum)]
        role: RoleArg,
        /// Where to write the renewed credentials file (made if missing).
        #[arg(long, env = "PADDOCK_CREDENTIALS_DIR", default_value = ".")]
        credentials_dir: PathBuf,
    },
    /// A session's dashboard link and its QR code: open it in a browser, or scan
    /// it with a phone. With per-session credentials the link carries the
    /// session's dashboard credentials (read-only, this session only). With
    /// --team, the team's page instead: its link reads that team's cars, those
    /// that join later too, and nothing of any other team.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["session_id", "team"])))]
    Share {
        /// The session to share (or --team).
        session_id: Option<String>,
        /// Share a team's page (the pit wall) rather than one session.
        #[arg(long, env = "PADDOCK_SHARE_TEAM")]
        team: Option<String>,
        #[command(flatten)]
        dashboard: DashboardArgs,
        /// The session's dashboard credentials for the link when the processor
        /// gives no fresh ones (it issues none, or this connection may not ask;
        /// default: <--credentials-dir>/<id>-dashboard.creds, as `sessions
        /// create` wrote it). Where it issues them, the link carries fresh ones.
        #[arg(long, env = "PADDOCK_DASHBOARD_CREDS")]
        dashboard_creds: Option<PathBuf>,
        /// Where `sessions create` saved the session's credentials.
        #[arg(long, env = "PADDOCK_CREDENTIALS_DIR", default_value = ".")]
        credentials_dir: PathBuf,
        /// Print the link only, without the QR code.
        #[arg(long, env = "PADDOCK_NO_QR")]
        no_qr: bool,
        /// Also write the QR code to this file as an SVG image, to open in a
        /// browser or print and scan from there: a link with per-session
        /// credentials needs a code wider than most terminals.
        #[arg(long, env = "PADDOCK_QR_FILE")]
        qr_file: Option<PathBuf>,
    },
    /// The links `share` made (per-session mode) that still work or were
    /// withdrawn lately: a session's, a team's, or all of them, with when each
    /// was made and last renewed by its page.
    #[command(group(clap::ArgGroup::new("whose").args(["session_id", "session", "team"])))]
    Links {
        /// The session whose links to list (or --session, --team).
        session_id: Option<String>,
        /// The session whose links to list.
        #[arg(long, env = "PADDOCK_LINKS_SESSION")]
        session: Option<String>,
        /// The team whose links to list.
        #[arg(long, env = "PADDOCK_LINKS_TEAM")]
        team: Option<String>,
    },
    /// Withdraw shared links: their pages' renewals are refused at once, and
    /// what they hold stops working within serve's --credentials-ttl.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["link", "team", "session"])))]
    Revoke {
        /// One link, by the id `share` printed.
        #[arg(long, env = "PADDOCK_REVOKE_LINK")]
        link: Option<String>,
        /// Every link of a team.
        #[arg(long, env = "PADDOCK_REVOKE_TEAM")]
        team: Option<String>,
        /// Every link of a session.
        #[arg(long, env = "PADDOCK_REVOKE_SESSION")]
        session: Option<String>,
    },
}

/// `sessions archive …`: `sessions.archive.list` and `sessions.archive.get`.
#[derive(Debug, Clone, Subcommand)]
pub enum ArchiveCommand {
    /// Every ended session still archived, most recently ended first.
    List {
        /// One team's sessions only.
        #[arg(long, env = "PADDOCK_TEAM")]
        team: Option<String>,
    },
    /// One ended session: when and why it ended, and its final state (its
    /// laps: `sessions laps <id> --archived`).
    Get { session_id: String },
}

/// A new session's labels: `sessions create` and `monitor`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LabelArgs {
    /// The team the car races for (a short label: letters, digits, spaces,
    /// # - _ . + & '; up to 32), shown on the pit wall and used by
    /// `sessions list --team`.
    #[arg(long, env = "PADDOCK_TEAM")]
    pub team: Option<String>,
    /// The car: its number or name (e.g. "#7"), same rules.
    #[arg(long, env = "PADDOCK_CAR")]
    pub car: Option<String>,
}

impl LabelArgs {
    pub fn label(&self) -> crate::protocol::documents::Label {
        crate::protocol::documents::Label {
            team: self.team.clone(),
            car: self.car.clone(),
        }
    }
}

/// `--role` of `sessions renew`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    Monitor,
    Dashboard,
}

/// Where the dashboard page is, for the links commands print.
#[derive(Debug, Clone, Args)]
pub struct DashboardArgs {
    /// The dashboard page's address (http://HOST:PORT of `serve --http-addr`);
    /// by default the one the processor advertises.
    #[arg(long, env = "PADDOCK_DASHBOARD_URL")]
    pub dashboard_url: Option<String>,
}

impl DashboardArgs {
    /// The flag, else what a processor advertises (when this connection may ask).
    pub async fn resolve(&self, client: &SessionsClient) -> Option<String> {
        match &self.dashboard_url {
            Some(url) => Some(url.clone()),
            None => client.dashboard_url().await,
        }
    }
}

pub async fn run(args: &SessionsArgs) -> anyhow::Result<()> {
    let url = &args.connect.nats_url;
    let nats = connect_once(&args.connect.config(), "paddock-ops").await?;
    let client = SessionsClient::new(nats, url.clone(), args.timeout);
    let out = match &args.command {
        SessionsCommand::Create {
            credentials_dir,
            label,
        } => {
            let doc = client.create_labelled(&label.label()).await?;
            // The credentials are saved either way: a script that asked for JSON
            // must not lose them.
            let text = created_text(&doc, credentials_dir, &args.connect.as_flags())?;
            if args.json { pretty(&doc) } else { text }
        }
        SessionsCommand::List { team } => {
            let rows = client.list_all(team.as_deref()).await?;
            if args.json {
                pretty(&one_page(rows))
            } else if rows.is_empty()
                && let Some(team) = team
            {
                // Labels are case-sensitive: a near miss is worth saying.
                let teams: std::collections::BTreeSet<String> = client
                    .list_all(None)
                    .await?
                    .into_iter()
                    .filter_map(|row| row.team)
                    .collect();
                no_team_sessions(team, &teams)
            } else {
                list_table(&rows, Utc::now())
            }
        }
        SessionsCommand::Get { session_id } => {
            let doc = client
                .get(session_id)
                .await
                .map_err(|e| ended_hint(e, session_id))?;
            if args.json {
                pretty(&doc)
            } else {
                session_text(&doc, Utc::now())
            }
        }
        SessionsCommand::Label {
            session_id,
            team,
            car,
        } => {
            let mut body = serde_json::Map::new();
            body.insert("session_id".into(), json!(session_id));
            for (name, value) in [("team", team), ("car", car)] {
                if let Some(value) = value {
                    let value = (!value.is_empty()).then(|| value.clone());
                    body.insert(name.into(), json!(value));
                }
            }
            let doc: crate::protocol::documents::SessionDocument<Value> = client
                .request(crate::protocol::subjects::LABEL, Value::Object(body))
                .await?;
            if args.json {
                pretty(&doc)
            } else {
                let shown = |l: &Option<String>| l.clone().unwrap_or_else(|| "none".into());
                format!(
                    "{session_id}: team {}, car {}\n",
                    shown(&doc.team),
                    shown(&doc.car)
                )
            }
        }
        SessionsCommand::Delete { session_id } => {
            let reply = client.delete(session_id).await?;
            if args.json {
                pretty(&reply)
            } else {
                let frames = reply.session.stats.telemetry_count;
                format!("deleted {session_id} ({frames} telemetry frames)\n")
            }
        }
        SessionsCommand::Laps {
            session_id,
            from_lap,
            archived,
            csv,
        } => {
            let id = crate::protocol::id::SessionId::parse(session_id)?;
            let laps = client
                .laps(&id, *from_lap, *archived)
                .await
                .map_err(|e| ended_hint(e, session_id))?;
            if *csv {
                format::laps_csv(&laps)
            } else if args.json {
                pretty(&json!({ "session_id": id, "count": laps.len(), "laps": laps }))
            } else {
                laps_table(&laps)
            }
        }
        SessionsCommand::Export {
            session_id,
            lap,
            format,
            out,
        } => {
            use crate::protocol::trace::{Best, LapRef};
            let id = crate::protocol::id::SessionId::parse(session_id)?;
            let laps: Vec<LapRef> = match lap.as_str() {
                "best" => vec![LapRef::Named(Best::Best)],
                "all" => {
                    let records = client
                        .laps(&id, None, false)
                        .await
                        .map_err(|e| ended_hint(e, session_id))?;
                    records
                        .iter()
                        .filter_map(|r| r.lap.as_u64().map(LapRef::Number))
                        .collect()
                }
                n => vec![LapRef::Number(n.parse().with_context(|| {
                    format!("--lap {n}: a lap number, best or all")
                })?)],
            };
            let channels = format::TRACE_COLUMNS.map(|(channel, _)| channel);
            let single = laps.len() == 1;
            let mut traces = Vec::new();
            for lap in laps {
                traces.push(client.recorded_lap(&id, lap, &channels).await?);
            }
            if *format == ExportFormat::Motec {
                write_motec(&client, &id, &traces, single, out.as_deref()).await?
            } else {
                match out {
                    None => format::trace_csv(&traces),
                    Some(dir) => {
                        std::fs::create_dir_all(dir)
                            .with_context(|| format!("cannot make {}", dir.display()))?;
                        let mut written = String::new();
                        for trace in &traces {
                            let path = dir.join(format!("{id}-lap{}.csv", trace.lap));
                            std::fs::write(&path, format::trace_csv(std::slice::from_ref(trace)))
                                .with_context(|| format!("cannot write {}", path.display()))?;
                            written.push_str(&format!(
                                "{} ({} frames)\n",
                                path.display(),
                                trace.frames
                            ));
                        }
                        written
                    }
                }
            }
        }
        SessionsCommand::Field { session_id, csv } => {
            let doc = client
                .get(session_id)
                .await
                .map_err(|e| ended_hint(e, session_id))?;
            let Some(field) = doc.field else {
                anyhow::bail!(
                    "session {session_id} has no field: its monitor sends one with --source f1 \
                     or acc-broadcast"
                );
            };
            let parsed: crate::protocol::field::Field = serde_json::from_value(field.clone())
                .context("the session's field does not read as the field schema")?;
            if *csv {
                format::field_csv(&parsed)
            } else if args.json {
                pretty(&field)
            } else {
                format::field_table(&parsed)
            }
        }
        SessionsCommand::Stints { session_id, csv } => {
            let id = crate::protocol::id::SessionId::parse(session_id)?;
            let stints = client.stints(&id).await?;
            if *csv {
                format::stints_csv(&stints.stints)
            } else if args.json {
                pretty(&stints)
            } else {
                format::stints_table(&stints.stints)
            }
        }
        SessionsCommand::Share {
            team: Some(team),
            dashboard,
            no_qr,
            qr_file,
            ..
        } => {
            let link = share_team(&client, team, dashboard).await?;
            shared(&link, args.json, *no_qr, qr_file.as_deref())?
        }
        SessionsCommand::Share {
            session_id,
            dashboard,
            dashboard_creds,
            credentials_dir,
            no_qr,
            qr_file,
            ..
        } => {
            let session_id = session_id.as_deref().unwrap_or_default();
            let id = crate::protocol::id::SessionId::parse(session_id)?;
            // A link to a session that is gone helps nobody; other failures (no
            // right to ask, as with per-session credentials) do not stop the link.
            if let Err(e @ crate::client::ClientError::Service { code: 404, .. }) =
                client.get(session_id).await
            {
                return Err(e.into());
            }
            let Some(base) = dashboard.resolve(&client).await else {
                anyhow::bail!(
                    "no dashboard address: no processor advertises one (serve --http-addr or \
                     --public-url), or this connection may not ask; pass --dashboard-url"
                );
            };
            // Fresh credentials only where the processor issues them (its
            // discovery metadata says; a per-session connection may not ask,
            // and then tries): asked of one that does not, renewal is refused,
            // and counted as a refused request.
            let made = match client.issues_credentials().await {
                Some(false) => None,
                _ => Some(client.share(&id).await),
            };
            let link_id = match &made {
                Some(Ok(made)) => Some(made.link.clone()),
                _ => None,
            };
            let access = match made {
                // Per-session mode: a new link, with its own credentials.
                Some(Ok(made)) => Some(made.creds),
                Some(Err(e @ crate::client::ClientError::Service { code: 404, .. })) => {
                    return Err(e.into());
                }
                // Open or team mode (the processor issues none), or this
                // connection may not ask: the saved file, if there is one.
                None | Some(Err(_)) => {
                    let path = dashboard_creds
                        .clone()
                        .unwrap_or_else(|| credentials_dir.join(format!("{id}-dashboard.creds")));
                    match std::fs::read_to_string(&path) {
                        Ok(text) => Some(text),
                        Err(_) if dashboard_creds.is_none() => None,
                        Err(e) => return Err(e).context(format!("cannot read {}", path.display())),
                    }
                }
            };
            let access = access
                .map(|text| crate::client::creds::parts(&text).context("not a .creds document"))
                .transpose()?;
            let inbox = crate::protocol::subjects::inbox_prefix(&id);
            let mut link = crate::protocol::subjects::dashboard_link(
                &base,
                &id,
                access
                    .as_ref()
                    .map(|(jwt, seed)| (jwt.as_str(), seed.as_str(), inbox.as_str())),
            );
            if let Some(link_id) = &link_id {
                link = crate::protocol::subjects::with_link_id(link, link_id);
            }
            let note = match (&access, &link_id) {
                (Some(_), Some(link_id)) => format!(
                    "The link and code carry this session's dashboard credentials \
                     (read-only, this session): share them with your team only.\n\
                     link {link_id}: withdraw it with `paddock sessions revoke --link {link_id}`\n"
                ),
                (Some(_), None) => "The link and code carry this session's dashboard credentials \
                     (read-only, this session): share them with your team only. They are the \
                     session's own (no link id): they end with the session, and cannot be \
                     withdrawn alone.\n"
                    .to_string(),
                _ => String::new(),
            };
            let link = Shared {
                json: json!({ "session_id": id, "link": link, "link_id": link_id }),
                link,
                note,
            };
            shared(&link, args.json, *no_qr, qr_file.as_deref())?
        }
        SessionsCommand::Renew {
            session_id,
            role,
            credentials_dir,
        } => {
            let id = crate::protocol::id::SessionId::parse(session_id)?;
            let endpoint = match role {
                RoleArg::Monitor => Endpoint::RenewMonitor,
                RoleArg::Dashboard => Endpoint::RenewDashboard,
            };
            let renewed = client.renew(&id, endpoint).await?;
            // As `create` does: a directory named for the credentials is made.
            std::fs::create_dir_all(credentials_dir)
                .with_context(|| format!("cannot create {}", credentials_dir.display()))?;
            let path = credentials_dir.join(format!("{id}-{}.creds", renewed.role));
            crate::server::credentials::write_private(&path, &renewed.creds)
                .with_context(|| format!("cannot write {}", path.display()))?;
            if args.json {
                pretty(&json!({
                    "session_id": id, "role": renewed.role, "file": path,
                    "expires_at": renewed.expires_at,
                }))
            } else {
                format!(
                    "{} (until {}; renewed by its holder while the session lives)\n",
                    path.display(),
                    renewed.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
                )
            }
        }
        SessionsCommand::Links {
            session_id,
            session,
            team,
        } => {
            let session = session_id.as_ref().or(session.as_ref());
            let request = crate::protocol::documents::LinksRequest {
                link: None,
                team: team.clone(),
                session_id: session
                    .map(|id| crate::protocol::id::SessionId::parse(id))
                    .transpose()?,
            };
            let links = client.links(&request).await?;
            if args.json {
                pretty(&links)
            } else {
                links_table(&links.links, Utc::now())
            }
        }
        SessionsCommand::Revoke {
            link,
            team,
            session,
        } => {
            let request = crate::protocol::documents::LinksRequest {
                link: link
                    .as_deref()
                    .map(crate::protocol::id::LinkId::parse)
                    .transpose()?,
                team: team.clone(),
                session_id: session
                    .as_deref()
                    .map(crate::protocol::id::SessionId::parse)
                    .transpose()?,
            };
            let revoked = client.revoke(&request).await?;
            if args.json {
                pretty(&revoked)
            } else {
                revoked_text(&revoked, &request)
            }
        }
        SessionsCommand::Stats => {
            let stats = client.stats().await?;
            if args.json {
                pretty(&stats)
            } else {
                stats_text(&stats)
            }
        }
        SessionsCommand::Archive(ArchiveCommand::List { team }) => {
            let rows = client.archive_list_all(team.as_deref()).await?;
            if args.json {
                pretty(&one_page(rows))
            } else {
                archive_table(&rows, Utc::now())
            }
        }
        SessionsCommand::Archive(ArchiveCommand::Get { session_id }) => {
            let archived = client.archive_get(session_id).await?;
            if args.json {
                pretty(&archived)
            } else {
                let now = Utc::now();
                let mut out = format!(
                    "{:<12} {} ({})\n",
                    "ended",
                    time_and_age(archived.ended_at, now),
                    archived.reason.as_str()
                );
                out.push_str(&session_text(&archived.session, now));
                out.push_str(&format!(
                    "{:<12} paddock sessions laps {} --archived\n",
                    "its laps", archived.session_id
                ));
                out
            }
        }
    };
    std::io::stdout()
        .write_all(out.as_bytes())
        .context("cannot write to stdout")?;
    Ok(())
}

/// A link `sessions share` prints: its `--json` form, and the note under
/// its QR code.
struct Shared {
    link: String,
    json: Value,
    note: String,
}

/// What `sessions share` prints: the link, then its QR code where it fits the
/// terminal (else why not), or the JSON; with `--qr-file` the code is also
/// written to that file as SVG.
fn shared(
    shared: &Shared,
    json: bool,
    no_qr: bool,
    qr_file: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    let link = &shared.link;
    let mut written = String::new();
    // A QR code is for another device, which cannot reach this machine's
    // loopback address (found by the README walk: the demo's links were all
    // 127.0.0.1, with nothing said).
    let loopback = ["://127.", "://localhost", "://[::1]"]
        .iter()
        .any(|host| link.contains(host));
    // On stderr: stdout stays the link (and code) for whatever reads it.
    if loopback && !json {
        eprintln!(
            "note: this link names this machine's loopback address: another device \
             (a phone scanning the code) cannot open it. Serve the page on an address \
             it reaches (serve or demo --http-addr 0.0.0.0:8081 --public-url \
             http://<this machine's address>:8081) or pass --dashboard-url."
        );
    }
    if let Some(path) = qr_file {
        let svg = format::qr_svg(link)
            .context("the link is longer than a QR code holds: share the link itself")?;
        std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?;
        written = format!("QR code written to {}\n", path.display());
    }
    Ok(if json {
        pretty(&shared.json)
    } else if no_qr {
        format!("{link}\n{written}")
    } else if !written.is_empty() {
        format!("{link}\n{written}{}", shared.note)
    } else {
        let hint = "widen the terminal, or write it to a file with --qr-file qr.svg";
        let code = format::qr(link, format::terminal_columns(), hint);
        format!("{link}\n{code}{}", shared.note)
    })
}

/// `sessions share --team`: the team page's link, with a team link's
/// credentials where the processor issues them (per-session mode); in open and
/// team mode the page needs none.
async fn share_team(
    client: &SessionsClient,
    team: &str,
    dashboard: &DashboardArgs,
) -> anyhow::Result<Shared> {
    crate::protocol::documents::Label {
        team: Some(team.to_string()),
        car: None,
    }
    .check()
    .map_err(|e| anyhow::anyhow!("--team: {e}"))?;
    let Some(base) = dashboard.resolve(client).await else {
        anyhow::bail!(
            "no dashboard address: no processor advertises one (serve --http-addr or \
             --public-url), or this connection may not ask; pass --dashboard-url"
        );
    };
    let access = match client.issues_credentials().await {
        Some(false) => None,
        // Per-session mode, or this connection may not ask: a refusal says why.
        _ => Some(
            client
                .team_access(team, None)
                .await
                .context("cannot get the team link's credentials")?,
        ),
    };
    let parts = access
        .as_ref()
        .map(|access| {
            crate::client::creds::parts(&access.creds)
                .context("not a .creds document")
                .map(|(jwt, seed)| (jwt, seed, access.inbox_prefix.clone()))
        })
        .transpose()?;
    let mut link = crate::protocol::subjects::team_link(
        &base,
        team,
        parts
            .as_ref()
            .map(|(jwt, seed, inbox)| (jwt.as_str(), seed.as_str(), inbox.as_str())),
    );
    let link_id = access.as_ref().and_then(|a| a.link.clone());
    if let Some(link_id) = &link_id {
        link = crate::protocol::subjects::with_link_id(link, link_id);
    }
    let mut note = String::new();
    if access.is_some() {
        note.push_str(
            "The link and code read this team's cars (read-only; cars that join later too, \
             no other team's): share them with your team only. A page keeps them fresh while \
             it is open.\n",
        );
    }
    if let Some(link_id) = &link_id {
        note.push_str(&format!(
            "link {link_id}: withdraw it with `paddock sessions revoke --link {link_id}`\n"
        ));
    }
    Ok(Shared {
        json: json!({
            "team": team,
            "link": link,
            "link_id": link_id,
            "expires_at": access.as_ref().map(|a| a.expires_at),
        }),
        link,
        note,
    })
}

/// Shared links as a table, oldest first.
pub fn links_table(links: &[crate::protocol::documents::Link], now: DateTime<Utc>) -> String {
    use crate::protocol::documents::LinkKind;
    let header = ["LINK", "FOR", "MADE", "LAST RENEWED", "RENEWALS", "STATE"];
    let cells = |link: &crate::protocol::documents::Link| {
        let what = match (link.kind, &link.team, link.session_id) {
            (LinkKind::Team, Some(team), _) => format!("team {team}"),
            (_, _, Some(id)) => format!("session {id}"),
            _ => "-".into(),
        };
        let state = match link.revoked_at {
            Some(at) => format!("withdrawn {}", time_and_age(at, now)),
            None if link.expires_at <= now => "ran out".into(),
            None => format!("live until {}", link.expires_at.format("%Y-%m-%d %H:%M:%S")),
        };
        vec![
            link.link.to_string(),
            what,
            time_and_age(link.created_at, now),
            link.renewed_at
                .map_or_else(|| "never".into(), |at| time_and_age(at, now)),
            link.renewals.to_string(),
            state,
        ]
    };
    counted_table(&header, links.iter().map(cells), "link")
}

/// What `sessions revoke` withdrew, and when that takes effect.
fn revoked_text(
    revoked: &crate::protocol::documents::Revoked,
    request: &crate::protocol::documents::LinksRequest,
) -> String {
    let whose = match (&request.link, &request.team, request.session_id) {
        (Some(link), ..) => format!("link {link}"),
        (_, Some(team), _) => format!("team {team}'s links"),
        (_, _, Some(id)) => format!("session {id}'s links"),
        _ => "links".into(),
    };
    if revoked.revoked == 0 {
        return format!("nothing to withdraw: {whose} were withdrawn already, or there are none\n");
    }
    let ids: Vec<String> = revoked.links.iter().map(|l| l.link.to_string()).collect();
    let last = revoked.links.iter().map(|l| l.expires_at).max();
    let mut out = format!(
        "withdrew {} link{} ({whose}): {}\n",
        revoked.revoked,
        if revoked.revoked == 1 { "" } else { "s" },
        ids.join(", ")
    );
    out.push_str("their renewals are refused from now on");
    if let Some(last) = last {
        out.push_str(&format!(
            "; what their pages hold stops working by {} at the latest (serve's --credentials-ttl)",
            last.format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    out.push('\n');
    out
}

/// A live-session request refused because the session has ended: where its
/// final state and laps are now (the processor's own reason speaks to monitors).
/// `sessions export --format motec`: one `.ld` and its `.ldx` for the laps,
/// named for the lap (one) or the session (several); the driver, car and
/// track from the session's latest frame when it is still live.
async fn write_motec(
    client: &SessionsClient,
    id: &crate::protocol::id::SessionId,
    traces: &[crate::protocol::trace::Trace],
    single: bool,
    out: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    use crate::export::motec;
    let mut details = motec::Details {
        session: Some(id.to_string()),
        ..Default::default()
    };
    if let Ok(doc) = client.get(&id.to_string()).await {
        let text = |key: &str| {
            doc.telemetry
                .as_ref()
                .and_then(|t| t[key].as_str().map(String::from))
        };
        details.driver = text("player_name");
        details.vehicle = text("car_name").or(doc.car.clone());
        details.venue = text("track_name");
        details.started_at = Some(doc.created_at);
    }
    let files = motec::write(traces, &details)?;
    let dir = out.unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    let name = match (single, traces.first()) {
        (true, Some(trace)) => format!("{id}-lap{}", trace.lap),
        _ => id.to_string(),
    };
    let ld = dir.join(format!("{name}.ld"));
    let ldx = dir.join(format!("{name}.ldx"));
    std::fs::write(&ld, &files.ld).with_context(|| format!("cannot write {}", ld.display()))?;
    std::fs::write(&ldx, &files.ldx).with_context(|| format!("cannot write {}", ldx.display()))?;
    Ok(format!(
        "{} ({} laps, {} channels of {} samples at {} Hz)\n{}\n",
        ld.display(),
        traces.len(),
        motec::CHANNELS.len(),
        files.samples,
        files.hz,
        ldx.display()
    ))
}

fn ended_hint(e: crate::client::ClientError, session_id: &str) -> anyhow::Error {
    match &e {
        crate::client::ClientError::Service {
            code: 404,
            reason,
            kind,
        } if kind.as_deref() == Some("ended_session") => {
            let ended = reason.split(';').next().unwrap_or(reason);
            anyhow::anyhow!(
                "{ended} (error 404); it is archived: `paddock sessions archive get {session_id}` \
                 shows its final state, `paddock sessions laps {session_id} --archived` its laps"
            )
        }
        _ => e.into(),
    }
}

/// `sessions list --team <team>` that matched nothing: teams whose label
/// differs only in case, else the teams there are.
pub fn no_team_sessions(team: &str, teams: &std::collections::BTreeSet<String>) -> String {
    let near: Vec<&str> = teams
        .iter()
        .filter(|t| t.to_lowercase() == team.to_lowercase())
        .map(String::as_str)
        .collect();
    if !near.is_empty() {
        format!(
            "no live sessions of team {team}; team labels are case-sensitive: did you mean {}?\n",
            near.join(" or ")
        )
    } else if teams.is_empty() {
        format!("no live sessions of team {team} (no live session has a team)\n")
    } else {
        let all: Vec<&str> = teams.iter().map(String::as_str).collect();
        format!(
            "no live sessions of team {team}; teams with live sessions: {}\n",
            all.join(", ")
        )
    }
}

/// The archive as a table, most recently ended first.
pub fn archive_table(
    rows: &[crate::protocol::documents::ArchivedSummary],
    now: DateTime<Utc>,
) -> String {
    let header = [
        "SESSION", "TEAM", "CAR", "CREATED", "ENDED", "HOW", "FRAMES",
    ];
    let cells = |row: &crate::protocol::documents::ArchivedSummary| {
        let mut cells = session_cells(row.session_id, &row.team, &row.car, row.created_at, now);
        cells.extend([
            time_and_age(row.ended_at, now),
            row.reason.as_str().to_string(),
            row.telemetry_count.to_string(),
        ]);
        cells
    };
    counted_table(&header, rows.iter().map(cells), "archived session")
}

/// A session row's first cells: id, team, car and when it was created.
fn session_cells(
    id: crate::protocol::id::SessionId,
    team: &Option<String>,
    car: &Option<String>,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<String> {
    let label = |l: &Option<String>| l.clone().unwrap_or_else(|| "-".into());
    vec![
        id.to_string(),
        label(team),
        label(car),
        time_and_age(created_at, now),
    ]
}

/// `header` and `rows` lined up, then their count ("2 live sessions"), or
/// "no live sessions" when there are none.
fn counted_table(header: &[&str], rows: impl Iterator<Item = Vec<String>>, what: &str) -> String {
    let mut table = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    table.extend(rows);
    let n = table.len() - 1;
    if n == 0 {
        return format!("no {what}s\n");
    }
    let mut out = format::columns(&table);
    out.push_str(&format!("{n} {what}{}\n", if n == 1 { "" } else { "s" }));
    out
}

/// Every page of a listing as one, for --json: the paging fields say so.
fn one_page<T>(rows: Vec<T>) -> crate::protocol::documents::Page<T> {
    let total = rows.len();
    crate::protocol::documents::Page::slice(rows, total, 0, total)
}

fn pretty(value: &impl serde::Serialize) -> String {
    let mut s = serde_json::to_string_pretty(value).expect("documents serialize");
    s.push('\n');
    s
}

/// The session list as a table, oldest first.
pub fn list_table(rows: &[SessionSummary], now: DateTime<Utc>) -> String {
    let header = [
        "SESSION",
        "TEAM",
        "CAR",
        "CREATED",
        "LAST UPDATE",
        "FRAMES",
        "SETUP",
    ];
    let cells = |row: &SessionSummary| {
        let mut cells = session_cells(row.session_id, &row.team, &row.car, row.created_at, now);
        cells.extend([
            time_and_age(row.last_update, now),
            row.telemetry_count.to_string(),
            if row.has_setup { "yes" } else { "no" }.to_string(),
        ]);
        cells
    };
    counted_table(&header, rows.iter().map(cells), "live session")
}

/// One session, as a few labelled lines. The frames are the sim's own JSON, read
/// by the field names the sample frames and `paddock monitor` use.
pub fn session_text(doc: &SessionDocument<Value>, now: DateTime<Utc>) -> String {
    let telemetry = match &doc.telemetry {
        None => "none yet".to_string(),
        Some(t) => {
            let mut parts = Vec::new();
            if let Some(lap) = t["lap"].as_f64() {
                parts.push(format!("lap {lap}"));
            }
            if let Some(position) = t["position"].as_f64() {
                parts.push(format!("P{position}"));
            }
            if let (Some(f), Some(c)) = (t["fuel"].as_f64(), t["fuel_capacity"].as_f64()) {
                parts.push(format!("fuel {f:.1}/{c:.0} L"));
            }
            if let Some(driver) = t["player_name"].as_str() {
                parts.push(driver.to_string());
            }
            if parts.is_empty() {
                "received".to_string()
            } else {
                parts.join(", ")
            }
        }
    };
    let setup = match doc.setup_timestamp {
        Some(at) => format!("stored {}", time_and_age(at, now)),
        None => "none".into(),
    };
    let s = &doc.stats;
    let label = |l: &Option<String>| l.clone().unwrap_or_else(|| "—".into());
    let mut lines = vec![
        ("session", doc.session_id.to_string()),
        ("team", label(&doc.team)),
        ("car", label(&doc.car)),
        ("created", time_and_age(doc.created_at, now)),
        ("last update", time_and_age(doc.last_update, now)),
        ("setup", setup),
        ("telemetry", telemetry),
        (
            "frames",
            format!(
                "{} telemetry, {} setup, {} rejected",
                s.telemetry_count, s.setup_count, s.rejected_count
            ),
        ),
        ("rate", format!("{} frames/s", s.rate_hz)),
        (
            "laps",
            format!("{} kept, {} completed", s.laps, s.laps_completed),
        ),
    ];
    if let Some(strategy) = &doc.strategy {
        lines.push(("strategy", strategy_text(strategy)));
    }
    match doc.alerts.as_deref() {
        None => {}
        Some([]) => lines.push(("alerts", "none".into())),
        Some(alerts) => {
            for (n, alert) in alerts.iter().enumerate() {
                let r = &alert.reading;
                lines.push((
                    if n == 0 { "alerts" } else { "" },
                    format!(
                        "{} {}: {} (since {})",
                        r.level.to_uppercase(),
                        r.kind,
                        r.message,
                        time_and_age(alert.since, now)
                    ),
                ));
            }
        }
    }
    lines
        .iter()
        .map(|(k, v)| format!("{k:<12} {v}\n"))
        .collect()
}

/// Fuel to the finish (the document's `strategy`) on one line: what is known.
fn strategy_text(s: &crate::protocol::documents::Strategy) -> String {
    let mut parts = Vec::new();
    if let Some(per) = s.fuel_per_lap {
        let from = s.fuel_per_lap_from.as_deref().unwrap_or("laps");
        parts.push(format!("{per:.2} L/lap ({from})"));
    }
    if let Some(laps) = s.laps_in_tank {
        parts.push(format!("{laps:.1} laps in the tank"));
    }
    if let Some(left) = s.race_laps_left {
        parts.push(format!("{left} race laps left"));
    }
    if let Some(add) = s.fuel_to_add {
        match (s.next_stop_fuel, s.stops_needed) {
            (Some(next), Some(stops)) if stops > 1 => parts.push(format!(
                "add {next:.1} L at the next stop, {stops} stops ({add:.1} L in all)"
            )),
            _ => parts.push(format!("add {add:.1} L")),
        }
    }
    if let Some(lap) = s.last_lap_to_stop {
        parts.push(format!("stop by lap {lap}"));
    }
    if parts.is_empty() {
        "no fuel use yet (needs completed laps)".into()
    } else {
        parts.join(", ")
    }
}

/// Service-wide counters, one per line; rejections by reason when there are any.
pub fn stats_text(stats: &Stats) -> String {
    let counters = [
        ("live sessions", stats.live_sessions.to_string()),
        ("sessions created", stats.sessions_created.to_string()),
        ("sessions deleted", stats.sessions_deleted.to_string()),
        ("sessions expired", stats.sessions_expired.to_string()),
        ("ingest rate hz", stats.ingest_rate_hz.to_string()),
        ("telemetry frames", stats.telemetry_frames.to_string()),
        ("setup frames", stats.setup_frames.to_string()),
        ("fields", stats.field_frames.to_string()),
        ("laps completed", stats.laps_completed.to_string()),
        ("lap records", stats.lap_records.to_string()),
        ("laps dropped", stats.laps_dropped.to_string()),
        ("laps trimmed", stats.laps_trimmed.to_string()),
        ("laps unstored", stats.laps_unstored.to_string()),
        ("alerts unqueued", stats.alerts_unqueued.to_string()),
        (
            "trace frames recorded",
            stats.trace_frames_recorded.to_string(),
        ),
        (
            "trace frames unrecorded",
            stats.trace_frames_unrecorded.to_string(),
        ),
        ("memory", memory_text(&stats.memory)),
        ("rejected total", stats.rejected_total.to_string()),
    ];
    let mut out = String::new();
    for (label, value) in counters {
        out.push_str(&format!("{label:<18} {value}\n"));
    }
    for (reason, n) in stats.rejected.iter().filter(|(_, n)| **n > 0) {
        out.push_str(&format!(
            "  rejected {:<10} {n}\n",
            reason.replace('_', " ")
        ));
    }
    out
}

/// The memory budget on one line: what frames and laps hold of it.
fn memory_text(m: &crate::protocol::documents::MemoryStats) -> String {
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    let held = m.frame_bytes + m.lap_bytes;
    let share = if m.budget_bytes > 0 {
        format!(" ({:.0} %)", 100.0 * held as f64 / m.budget_bytes as f64)
    } else {
        String::new()
    };
    format!(
        "{:.1} MiB of {:.1} MiB{share}: frames {:.1} MiB, laps {:.1} MiB{}",
        mib(held),
        mib(m.budget_bytes),
        mib(m.frame_bytes),
        mib(m.lap_bytes),
        if m.over_budget {
            "; OVER BUDGET: new sessions are refused"
        } else {
            ""
        }
    )
}

fn time_and_age(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let age = (now - t).to_std().unwrap_or_default();
    format!(
        "{} ({} ago)",
        t.format("%Y-%m-%d %H:%M:%S"),
        format::age(age)
    )
}

/// The new session's id, and where its credentials went, if it has any.
fn created_text(
    doc: &SessionDocument<Value>,
    dir: &std::path::Path,
    flags: &str,
) -> anyhow::Result<String> {
    let id = doc.session_id;
    let mut out = format!("{id}\n");
    if let Some(creds) = &doc.credentials {
        let inbox = &creds.inbox_prefix;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (role, text) in [("monitor", &creds.monitor), ("dashboard", &creds.dashboard)] {
            let path = dir.join(format!("{id}-{role}.creds"));
            crate::server::credentials::write_private(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let command = match role {
                "monitor" => format!("paddock monitor --session {id}{flags}"),
                _ => format!("paddock watch {id}{flags}"),
            };
            out.push_str(&format!(
                "{role}: {command} --creds {} --inbox-prefix {inbox}\n",
                path.display()
            ));
        }
    }
    Ok(out)
}

/// Lap records as a table. The lap time is the sim's own (`last_lap_time` in the
/// next lap's first frame) when it sends one, else the time between the lap's
/// first frame and the next lap's.
pub fn laps_table(laps: &[LapRecord<Value>]) -> String {
    if laps.is_empty() {
        return "no completed laps\n".into();
    }
    let mut rows = vec![vec![
        "LAP".to_string(),
        "LAP TIME".into(),
        "FRAMES".into(),
        "FUEL AFTER".into(),
        "ENDED".into(),
    ]];
    for lap in laps {
        let elapsed = (lap.ended_at - lap.started_at).num_milliseconds() as f64 / 1000.0;
        let time = lap.next_frame["last_lap_time"].as_f64().unwrap_or(elapsed);
        rows.push(vec![
            match &lap.lap {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            format::lap_time(Some(time)),
            lap.frames.to_string(),
            lap.next_frame["fuel"]
                .as_f64()
                .map_or("—".into(), |f| format!("{f:.1} L")),
            crate::protocol::documents::time::format(&lap.ended_at),
        ]);
    }
    let mut out = format::columns(&rows);
    out.push_str(&format!("{} laps\n", laps.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_read_as_a_table_with_the_sims_lap_time() {
        let laps = [
            json!({"lap": 1, "started_at": "2026-11-24T10:00:00Z", "ended_at": "2026-11-24T10:03:30.5Z",
                   "frames": 2100, "last_frame": {}, "next_frame": {"fuel": 70.25}}),
            json!({"lap": 2, "started_at": "2026-11-24T10:03:30.5Z", "ended_at": "2026-11-24T10:07:00Z",
                   "frames": 2090, "last_frame": {}, "next_frame": {"last_lap_time": 209.125}}),
        ];
        let laps: Vec<LapRecord<Value>> = laps
            .into_iter()
            .map(|l| serde_json::from_value(l).unwrap())
            .collect();
        let table = laps_table(&laps);
        assert!(table.starts_with("LAP  LAP TIME"), "{table}");
        assert!(table.contains("3:30.500"), "{table}");
        assert!(table.contains("3:29.125"), "{table}");
        assert!(
            table.contains("70.2 L") || table.contains("70.3 L"),
            "{table}"
        );
        assert!(table.ends_with("2 laps\n"), "{table}");
        assert_eq!(laps_table(&[]), "no completed laps\n");
    }

    #[test]
    fn the_list_is_a_table_with_a_count() {
        let now = Utc::now();
        let rows = vec![json!({
            "session_id": "3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b",
            "created_at": (now - chrono::Duration::seconds(90)).to_rfc3339(),
            "last_update": now.to_rfc3339(),
            "telemetry_count": 12, "has_setup": true
        })];
        let rows: Vec<SessionSummary> = rows
            .into_iter()
            .map(|r| serde_json::from_value(r).unwrap())
            .collect();
        let out = list_table(&rows, now);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("SESSION"), "{out}");
        assert!(
            lines[1].contains("3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b")
                && lines[1].contains("(1m30s ago)"),
            "{out}"
        );
        assert!(
            lines[1].contains(" 12 ") && lines[1].ends_with("yes"),
            "{out}"
        );
        assert_eq!(lines[2], "1 live session");
        assert_eq!(list_table(&[], now), "no live sessions\n");
    }

    #[test]
    fn a_session_reads_as_labelled_lines() {
        let doc: SessionDocument<Value> = serde_json::from_value(json!({
            "session_id": "3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b",
            "created_at": Utc::now().to_rfc3339(), "last_update": Utc::now().to_rfc3339(),
            "setup": {}, "setup_timestamp": Utc::now().to_rfc3339(),
            "telemetry": {"lap": 14, "position": 3, "fuel": 41.2, "fuel_capacity": 75.0, "player_name": "A. Driver"},
            "stats": {"telemetry_count": 5, "setup_count": 1, "rejected_count": 2,
                      "first_frame_at": null, "last_frame_at": null, "duration_s": 1.0, "rate_hz": 0.0}
        }))
        .unwrap();
        let out = session_text(&doc, Utc::now());
        assert!(
            out.contains("telemetry    lap 14, P3, fuel 41.2/75 L, A. Driver"),
            "{out}"
        );
        assert!(
            out.contains("frames       5 telemetry, 1 setup, 2 rejected"),
            "{out}"
        );
    }
}
