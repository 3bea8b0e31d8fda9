//! At the track and at home (docs/ARCHITECTURE.md): the track's broker is a leaf
//! node of the hub, with a JetStream domain of its own, and the leaf link runs
//! through a proxy the test cuts and restores. Both brokers are started from
//! what `paddock broker config` writes (the same function), the processor is
//! `paddock serve` at the track, and the hub's reader is `paddock hub`'s.
//!
//! Runs on the broker the harness finds (Debian's 2.9.10 on PATH); CI runs it
//! again with `NATS_SERVER_BIN=$(paddock broker fetch)` (the current release).

use std::time::{Duration, Instant};

use async_nats::Client;
use futures::StreamExt;
use paddock::broker::leaf::{LeafPlan, LeafTls};
use paddock::server::hub::{self, HubConfig};
use paddock::server::store::mirror::MirrorConfig;
use serde_json::Value;

use crate::support::browser::{Chromium, DESKTOP};
use crate::support::*;

/// The car drives this long, the link cut for the middle half of it (the
/// issue's shape: 60 s with 30 s cut, at half the wall time).
const DRIVE: Duration = Duration::from_secs(30);
/// Frames a second, and frames per lap (a lap every 2 s).
const HZ: u64 = 20;
const FRAMES_PER_LAP: u64 = 40;
/// How long the hub may take to hold every lap once the link is back: the
/// issue's 30 s. Left to the broker, 2.9 meets it (a few seconds) but from
/// 2.10 a mirror whose consumer request went out while the link was down
/// waits out that request (30 s, nats-server's srcConsumerWaitTime) and a
/// backoff: 37 s measured on 2.15.1 after a 15 s cut. `paddock hub` holds
/// those requests and sends them on when the link returns
/// (hub::relay_mirror_requests). The test prints the figure.
const CATCH_UP: Duration = Duration::from_secs(30);

struct Pair {
    hub: NatsServer,
    track: NatsServer,
    proxy: Proxy,
    dir: std::path::PathBuf,
}

/// A hub and a track broker from `broker config`'s text, the track dialling
/// the hub through a proxy; in operator mode with what `auth init` wrote into
/// `auth` (both brokers trust its operator, the leaf presents leaf.creds);
/// with `tls`, over TLS (`--leaf-of tls://…`, a test CA's certificate).
async fn start_pair(auth: Option<&std::path::Path>, tls: bool) -> Pair {
    let dir = fresh_dir("leaf");
    let tls = tls.then(|| {
        crate::security::certificates(&dir);
        LeafTls {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            ca: Some(dir.join("ca.pem")),
        }
    });
    let scheme = if tls.is_some() { "tls" } else { "nats-leaf" };
    // As `broker config --auth` does: the operator's file beside the
    // configurations (nats-server reads `include` relative to the file).
    let operator = auth.map(|auth| {
        let account = std::fs::read_to_string(auth.join("issuer.account")).unwrap();
        std::fs::copy(
            auth.join("nats-operator.conf"),
            dir.join("nats-operator.conf"),
        )
        .unwrap();
        ("./nats-operator.conf".into(), account.trim().to_string())
    });
    let leaf_port = free_port();
    let proxy = Proxy::start(leaf_port).await;
    let plan = |store: &str| LeafPlan {
        hub_url: format!("{scheme}://127.0.0.1:{}", proxy.port),
        domain: "track".into(),
        hub_domain: "hub".into(),
        creds: auth.map(|auth| auth.join("leaf.creds")),
        operator: operator.clone(),
        client_port: -1,
        websocket_port: -1,
        leaf_port,
        store_dir: dir.join(store),
        tls: tls.clone(),
    };
    let hub_conf = dir.join("hub.conf");
    let track_conf = dir.join("track.conf");
    std::fs::write(&hub_conf, plan("hub").hub_config()).unwrap();
    std::fs::write(&track_conf, plan("track").track_config()).unwrap();
    let hub = NatsServer::start_from_file(&hub_conf);
    let track = NatsServer::start_from_file(&track_conf);
    Pair {
        hub,
        track,
        proxy,
        dir,
    }
}

/// `paddock hub --mirror-of track`'s reader, in-process, on `client`.
struct HubReader {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), hub::HubError>>,
}

impl HubReader {
    fn start(client: Client) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = HubConfig {
            mirror: MirrorConfig {
                bucket: "paddock_sessions".into(),
                domain: "track".into(),
                max_bytes: 256 * 1024 * 1024,
                replicas: 1,
            },
        };
        let task = tokio::spawn(hub::run(client, config, async move {
            let _ = stopped.await;
        }));
        HubReader { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Waits until a processor answers the service's PING through `client`'s broker.
async fn until_processors_answer(client: &Client, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while paddock::client::processors_answering(client).await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "{what}: no processor answers");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A reply's JSON body (any reply: an error's too).
async fn ask_json(client: &Client, subject: String) -> Option<Value> {
    let reply = tokio::time::timeout(Duration::from_secs(3), client.request(subject, "{}".into()))
        .await
        .ok()?
        .ok()?;
    serde_json::from_slice(&reply.payload).ok()
}

/// The lap records the laps bucket behind `client` holds for `id` (the
/// track's own, or the hub's mirror of it).
async fn laps_held(hub: &Client, id: &str) -> usize {
    let js = async_nats::jetstream::new(hub.clone());
    let Ok(kv) = js.get_key_value("paddock_sessions_laps").await else {
        return 0;
    };
    let Ok(keys) = kv.keys().await else { return 0 };
    let keys: Vec<String> = keys.filter_map(|k| async { k.ok() }).collect().await;
    keys.iter()
        .filter(|k| k.starts_with(&format!("{id}.")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pit_wall_keeps_every_frame_offline_and_the_hub_catches_up_after_the_link_returns() {
    init_logs();
    let pair = start_pair(None, false).await;
    let track = connect(&pair.track.url()).await;
    let home = connect(&pair.hub.url()).await;
    // The processor runs at the track, as ever.
    let _serve = serve_binary(&pair.track.url(), &["--http-addr", "127.0.0.1:0"]);
    until_processors_answer(&track, "at the track").await;
    // The hub's reader: makes the mirrors, answers when the track does not.
    let hub_reader = HubReader::start(connect(&pair.hub.url()).await);
    until_processors_answer(&home, "at home, over the leaf").await;

    let id = create(&track).await;
    // The pit wall's consumer at the track, and a dashboard at home.
    let mut pit_wall = track
        .subscribe(format!("session.{id}.telemetry"))
        .await
        .unwrap();
    let mut home_view = home.subscribe(format!("session.{id}.>")).await.unwrap();
    home.flush().await.unwrap();
    // Until home's interest has crossed the leaf, frames would not.
    let deadline = Instant::now() + PATIENCE;
    loop {
        track
            .publish(format!("session.{id}.telemetry"), frame(0).into())
            .await
            .unwrap();
        if tokio::time::timeout(Duration::from_millis(200), home_view.next())
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "home never saw the track's frames"
        );
    }
    pit_wall_drain(&mut pit_wall).await;

    // The car: HZ frames a second, a lap every FRAMES_PER_LAP frames, each
    // frame numbered; the link cut for the middle half of the drive.
    let frames = DRIVE.as_secs() * HZ;
    let driver = {
        let track = track.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / HZ));
            for n in 0..frames {
                tick.tick().await;
                let mut f: Value = serde_json::from_str(&frame(1 + n / FRAMES_PER_LAP)).unwrap();
                f["seq"] = n.into();
                track
                    .publish(format!("session.{id}.telemetry"), f.to_string().into())
                    .await
                    .unwrap();
            }
            // The next lap's first frame completes the last one.
            let last = frame(1 + frames / FRAMES_PER_LAP);
            track
                .publish(format!("session.{id}.telemetry"), last.into())
                .await
                .unwrap();
            track.flush().await.unwrap();
        })
    };
    let started = Instant::now();
    tokio::time::sleep(DRIVE / 4).await;
    pair.proxy.cut();
    let cut_at = Instant::now();
    tracing::info!("link cut");

    // While the link is down, home reads the hub's copy, marked as of when.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let deadline = Instant::now() + PATIENCE;
    let copy = loop {
        let doc = ask_json(&home, format!("sessions.get.{id}")).await;
        if let Some(doc) = &doc
            && doc.get("as_of").is_some()
        {
            break doc.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the hub's copy did not answer: {doc:?}"
        );
    };
    assert_eq!(copy["session_id"], id.as_str(), "{copy}");
    assert!(is_rfc3339_utc(&copy["as_of"]), "{copy}");
    assert!(
        copy["stats"]["telemetry_count"].as_u64().unwrap() > 0,
        "{copy}"
    );
    let laps = ask_json(&home, format!("sessions.laps.{id}"))
        .await
        .unwrap();
    assert!(laps.get("as_of").is_some(), "{laps}");
    let laps_before_cut = laps["count"].as_u64().unwrap();
    assert!(laps_before_cut >= 1, "laps stored before the cut: {laps}");
    let list = ask_json(&home, "sessions.list".into()).await.unwrap();
    assert!(list.get("as_of").is_some(), "{list}");
    // Nothing of the track's waits on the hub: it answers as ever.
    let live = ask_json(&track, format!("sessions.get.{id}"))
        .await
        .unwrap();
    assert!(live.get("as_of").is_none(), "{live}");

    let restore_in = (DRIVE * 3 / 4).saturating_sub(started.elapsed());
    tokio::time::sleep(restore_in).await;
    pair.proxy.restore();
    let restored_at = Instant::now();
    tracing::info!(cut_s = cut_at.elapsed().as_secs_f64(), "link restored");
    // The outage's laps: what the track held when the link came back reaches
    // the hub (the drive goes on meanwhile; its last lap ends with it).
    let held_at_track = laps_held(&track, &id).await;
    let outage_caught_up = loop {
        if laps_held(&home, &id).await >= held_at_track {
            break restored_at.elapsed();
        }
        assert!(
            restored_at.elapsed() < CATCH_UP,
            "the hub never held the {held_at_track} laps the track held when the link returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    driver.await.unwrap();

    // The track's consumer saw every frame, cut or not.
    let seen = count_frames(&mut pit_wall, frames + 1).await;
    assert_eq!(seen, frames + 1, "the pit wall missed frames");
    // Laps 1 to frames / FRAMES_PER_LAP, and lap 0 (the frames that waited for
    // home's interest): the track's processor holds them all.
    let expected_laps = frames / FRAMES_PER_LAP + 1;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let at_track = ask_json(&track, format!("sessions.laps.{id}"))
            .await
            .unwrap();
        if at_track["count"].as_u64() == Some(expected_laps) {
            break;
        }
        assert!(Instant::now() < deadline, "laps at the track: {at_track}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The hub holds every lap record within CATCH_UP of the link's return.
    let caught_up = loop {
        let held = laps_held(&home, &id).await as u64;
        if held == expected_laps {
            break restored_at.elapsed();
        }
        assert!(
            restored_at.elapsed() < CATCH_UP,
            "the hub holds {held} of {expected_laps} laps {CATCH_UP:?} after the link returned"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "leaf: the {held_at_track} laps the track held at the link's return at the hub {:.1} s \
         after it; all {expected_laps} {:.1} s after it (the drive's last lap ends {:.1} s after it; \
         {laps_before_cut} before the cut)",
        outage_caught_up.as_secs_f64(),
        caught_up.as_secs_f64(),
        (DRIVE / 4).as_secs_f64(),
    );

    // Home's live view resumed by itself: frames sent after the link returned
    // reached it on the subscription made before the cut.
    let mut resumed = false;
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), home_view.next()).await
    {
        let Ok(f) = serde_json::from_slice::<Value>(&message.payload) else {
            continue;
        };
        if f["seq"].as_u64().is_some_and(|n| n >= frames * 3 / 4 + HZ) {
            resumed = true;
        }
    }
    assert!(
        resumed,
        "home's live view did not resume after the link returned"
    );

    // Back live: home's requests are the track's again (no "as_of").
    let deadline = Instant::now() + PATIENCE;
    loop {
        let doc = ask_json(&home, format!("sessions.get.{id}")).await;
        if doc.as_ref().is_some_and(|d| d.get("as_of").is_none()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "home still reads the copy: {doc:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    hub_reader.stop().await;
    let _ = std::fs::remove_dir_all(&pair.dir);
}

/// Frames already waiting on `sub`.
async fn pit_wall_drain(sub: &mut async_nats::Subscriber) -> u64 {
    let mut n = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        n += 1;
    }
    n
}

/// Counts the numbered frames (and the final one) on `sub` until `want` or a
/// quiet second.
async fn count_frames(sub: &mut async_nats::Subscriber, want: u64) -> u64 {
    let mut n = 0;
    while n < want {
        match tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
            Ok(Some(_)) => n += 1,
            _ => break,
        }
    }
    n
}

#[tokio::test]
async fn broker_config_writes_both_brokers_and_nats_server_accepts_them() {
    let dir = fresh_dir("leaf-config");
    let out = dir.to_str().unwrap();
    let (code, stdout, stderr) = run_paddock(&[
        "broker",
        "config",
        "--leaf-of",
        "nats-leaf://hub.example:7422",
        "--domain",
        "le-mans",
        "--store-dir",
        out,
        "--out",
        out,
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("paddock hub --mirror-of le-mans"),
        "{stdout}"
    );
    let (bin, _) = paddock::broker::locate_from_env().unwrap();
    for file in ["track.conf", "hub.conf"] {
        let path = dir.join(file);
        let check = std::process::Command::new(&bin)
            .args(["-c", path.to_str().unwrap(), "-t"])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let track = std::fs::read_to_string(dir.join("track.conf")).unwrap();
    assert!(track.contains("domain: le-mans"), "{track}");
    // The same domain on both sides is refused, with the reason.
    let (code, _, stderr) = run_paddock(&[
        "broker",
        "config",
        "--leaf-of",
        "nats-leaf://h:7422",
        "--domain",
        "hub",
        "--out",
        out,
    ])
    .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("different domains"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Operator mode across the leaf: a session's dashboard credentials, issued at
/// the track, work at the hub with the same scope; the leaf's credentials
/// (leaf.creds) carry the live data, the requests and the mirrors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn links_issued_at_the_track_work_at_the_hub_with_the_same_scope() {
    init_logs();
    let auth = fresh_dir("leaf-auth");
    let (code, _, stderr) = run_paddock(&["auth", "init", "--out", auth.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{stderr}");
    let pair = start_pair(Some(&auth), false).await;
    let processor_creds = auth.join("processor.creds");
    let _serve = serve_issuing(&pair.track.url(), &auth, &["--http-addr", "127.0.0.1:0"]);
    let track = connect_with_creds(&pair.track.url(), &processor_creds, "_INBOX").await;
    until_processors_answer(&track, "at the track").await;
    let hub_reader = connect_with_creds(&pair.hub.url(), &processor_creds, "_INBOX").await;
    let hub_admin = connect_with_creds(&pair.hub.url(), &processor_creds, "_INBOX").await;
    let hub_reader = HubReader::start(hub_reader);
    let ops = connect_with_creds(&pair.hub.url(), auth.join("ops.creds"), "_INBOX_ops").await;
    until_processors_answer(&ops, "at home, over the leaf").await;

    // A session made at the track, its credentials saved as a team does.
    let (id, _) = create_with_creator(&pair.track.url(), &auth).await;
    let (other, _) = create_with_creator(&pair.track.url(), &auth).await;
    let inbox = format!("_INBOX_{id}");
    let monitor = connect_with_creds(
        &pair.track.url(),
        auth.join(format!("{id}-monitor.creds")),
        &inbox,
    )
    .await;
    // Its dashboard at home, with the credentials issued at the track.
    let dashboard = async_nats::ConnectOptions::with_credentials_file(
        auth.join(format!("{id}-dashboard.creds")),
    )
    .await
    .unwrap()
    .custom_inbox_prefix(&inbox)
    .connect(pair.hub.url())
    .await
    .unwrap();
    let mut view = dashboard
        .subscribe(format!("session.{id}.>"))
        .await
        .unwrap();
    dashboard.flush().await.unwrap();
    // Frames reach home through the leaf's credentials.
    let deadline = Instant::now() + PATIENCE;
    let mut lap = 1;
    loop {
        monitor
            .publish(format!("session.{id}.telemetry"), frame(lap).into())
            .await
            .unwrap();
        monitor.flush().await.unwrap();
        if tokio::time::timeout(Duration::from_millis(300), view.next())
            .await
            .is_ok()
        {
            break;
        }
        lap += 1;
        assert!(
            Instant::now() < deadline,
            "home never saw the track's frames"
        );
    }
    for lap in lap + 1..lap + 4 {
        monitor
            .publish(format!("session.{id}.telemetry"), frame(lap).into())
            .await
            .unwrap();
    }
    monitor.flush().await.unwrap();
    // Its own snapshot, asked at home and answered by the track (the reply
    // crosses the leaf to the session's own inbox).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let doc = ask_json(&dashboard, format!("sessions.get.{id}")).await;
        if doc
            .as_ref()
            .is_some_and(|d| d["session_id"] == id.as_str() && d.get("as_of").is_none())
        {
            break;
        }
        assert!(Instant::now() < deadline, "no live answer at home: {doc:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The same scope: another session is refused by the hub's broker.
    let refused = tokio::time::timeout(
        Duration::from_secs(3),
        dashboard.request(format!("sessions.get.{other}"), "{}".into()),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "another session's snapshot: {refused:?}"
    );
    // The mirrors work through leaf.creds: the laps reach the hub's copy.
    let deadline = Instant::now() + Duration::from_secs(30);
    while laps_held(&hub_admin, &id).await < 2 {
        assert!(Instant::now() < deadline, "no laps reached the hub's copy");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // With the link cut the dashboard's snapshot comes from the copy.
    pair.proxy.cut();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let doc = ask_json(&dashboard, format!("sessions.get.{id}")).await;
        if doc.as_ref().is_some_and(|d| d.get("as_of").is_some()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the copy did not answer: {doc:?}"
        );
    }
    hub_reader.stop().await;
    let _ = std::fs::remove_dir_all(&pair.dir);
    let _ = std::fs::remove_dir_all(&auth);
}

/// `paddock hub` as an operator runs it, before any track has dialled in: it
/// makes the mirrors, serves the page at home pointed at the hub's broker, and
/// answers from the (empty) copy with `"as_of": null`: it never heard from
/// the track.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paddock_hub_serves_the_page_at_home_and_answers_before_the_track_dials_in() {
    let hub = NatsServer::start_websocket();
    let addr = format!("127.0.0.1:{}", free_port());
    let ws = hub.ws_url();
    let _reader = Running::spawn(&[
        "hub",
        "--mirror-of",
        "track",
        "--nats-url",
        &hub.url(),
        "--kv-max-bytes",
        "64MiB",
        "--http-addr",
        &addr,
        "--ws-url",
        &ws,
    ]);
    until_status(&addr, "/readyz", 200).await;
    let config: Value =
        serde_json::from_str(&until_status(&addr, "/config.json", 200).await).unwrap();
    assert_eq!(config["ws_url"], ws.as_str());
    let home = connect(&hub.url()).await;
    let deadline = Instant::now() + PATIENCE;
    let list = loop {
        if let Some(list) = ask_json(&home, "sessions.list".into()).await {
            break list;
        }
        assert!(Instant::now() < deadline, "paddock hub did not answer");
    };
    assert_eq!(list["total"], 0, "{list}");
    assert_eq!(list["as_of"], Value::Null, "{list}");
    // An id the copy does not hold: the processor's own 404.
    let missing = ask_json(&home, format!("sessions.get.{}", uuid::Uuid::new_v4()))
        .await
        .unwrap();
    assert_eq!(missing["code"], 404, "{missing}");
    // The mirrors exist, each of the track's stream of that name in its domain.
    let js = async_nats::jetstream::new(home.clone());
    for name in [
        "KV_paddock_sessions",
        "KV_paddock_sessions_laps",
        "paddock_sessions_traces",
        "paddock_sessions_best",
    ] {
        let mut stream = js.get_stream(name).await.unwrap();
        let info = stream.info().await.unwrap();
        let mirror = info.config.mirror.clone().unwrap();
        assert_eq!(mirror.name, name);
        assert_eq!(mirror.external.unwrap().api_prefix, "$JS.track.API");
    }
}

/// The home dashboard: the page `paddock hub --http-addr` serves at
/// home, in a real browser, on the hub broker's WebSocket listener, follows a
/// car at the track live over the leaf; with the link cut it goes STALE on
/// its last frame, and once the link returns it shows the car's new frames
/// again by itself: the same page, never reloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_home_dashboard_follows_live_again_without_a_reload_after_the_link_returns() {
    let Some(chromium) = Chromium::find() else {
        return;
    };
    init_logs();
    let pair = start_pair(None, false).await;
    let track = connect(&pair.track.url()).await;
    let home = connect(&pair.hub.url()).await;
    let _serve = serve_binary(&pair.track.url(), &["--http-addr", "127.0.0.1:0"]);
    until_processors_answer(&track, "at the track").await;
    let http = format!("127.0.0.1:{}", free_port());
    let ws = pair.hub.ws_url();
    let _hub = Running::spawn(&[
        "hub",
        "--mirror-of",
        "track",
        "--nats-url",
        &pair.hub.url(),
        "--kv-max-bytes",
        "64MiB",
        "--http-addr",
        &http,
        "--ws-url",
        &ws,
    ]);
    until_status(&http, "/readyz", 200).await;
    until_processors_answer(&home, "at home, over the leaf").await;
    let id = create(&track).await;
    let publish = {
        let (track, id) = (track.clone(), id.clone());
        move |lap: u64| {
            let track = track.clone();
            let subject = format!("session.{id}.telemetry");
            async move {
                track.publish(subject, frame(lap).into()).await.unwrap();
                track.flush().await.unwrap();
            }
        }
    };
    publish(1).await;

    let browser = chromium.start(DESKTOP).await;
    browser
        .open(&format!("http://{http}/session/{id}?stale=2"))
        .await;
    browser
        .wait_text("[data-f=lap]", "the snapshot at home", |t| t == "1")
        .await;
    // Live over the leaf (the page's subscription is at the hub).
    publish(2).await;
    browser
        .wait_text("[data-f=lap]", "a live frame at home", |t| t == "2")
        .await;
    // A mark a reload would wipe.
    browser.eval("window.__same_page = true; return true").await;

    // The link down: the car drives on at the track, home sees nothing of
    // it and says STALE on its last frame.
    pair.proxy.cut();
    let cut_at = Instant::now();
    // The proxy's pumps end a moment after the cut: the car drives on once
    // home has said STALE (2 s without a frame), so none of its frames can
    // still cross on a pump not yet ended (a loaded machine saw lap 3 at home).
    browser
        .wait_shown("#stale", true, Duration::from_secs(10))
        .await;
    assert_eq!(browser.text("[data-f=lap]").await, "2");
    let car = {
        let publish = publish.clone();
        tokio::spawn(async move {
            let mut lap = 3;
            loop {
                publish(lap).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                lap += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(cut_at.elapsed())).await;
    assert_eq!(
        browser.text("[data-f=lap]").await,
        "2",
        "home saw a frame while the link was cut"
    );

    // The link back: new frames on the same page, STALE gone, no reload.
    pair.proxy.restore();
    let restored_at = Instant::now();
    let deadline = restored_at + Duration::from_secs(30);
    let before: u64 = 2;
    loop {
        let lap = browser
            .text("[data-f=lap]")
            .await
            .parse::<u64>()
            .unwrap_or(0);
        if lap > before && !browser.shown("#stale").await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page at home did not follow live again: lap {lap}, link {:?}",
            browser.text("#link").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resumed = restored_at.elapsed();
    // And it keeps following: the lap moves on again.
    let shown = browser.text("[data-f=lap]").await;
    browser
        .wait_text("[data-f=lap]", "the next live frame", |t| t != shown)
        .await;
    assert_eq!(
        browser.eval("return window.__same_page === true").await,
        Value::Bool(true),
        "the page was reloaded"
    );
    eprintln!(
        "leaf: the home page showed live frames again {:.1} s after the link returned ({:.0} s cut)",
        resumed.as_secs_f64(),
        (restored_at - cut_at).as_secs_f64()
    );
    car.abort();
    browser.close().await;
    let _ = std::fs::remove_dir_all(&pair.dir);
}

/// `broker config --leaf-of tls://… --hub-tls-cert … --hub-tls-key …
/// --hub-tls-ca …`: the link comes up over TLS, the track checking the hub's
/// certificate against the given CA, and carries frames and the JetStream API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaf_link_runs_over_tls_with_a_private_ca() {
    if crate::support::needs::on_path(&["openssl"]).is_none() {
        crate::security::TLS_TEST.left_out("openssl");
        return;
    }
    let pair = start_pair(None, true).await;
    let track_conf = std::fs::read_to_string(pair.dir.join("track.conf")).unwrap();
    assert!(
        track_conf.contains("url: \"tls://127.0.0.1:"),
        "{track_conf}"
    );
    let track = connect(&pair.track.url()).await;
    let home = connect(&pair.hub.url()).await;
    let mut view = home.subscribe("session.tls.telemetry").await.unwrap();
    home.flush().await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        track
            .publish("session.tls.telemetry", frame(1).into())
            .await
            .unwrap();
        if tokio::time::timeout(Duration::from_millis(300), view.next())
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no frame crossed the TLS leaf link"
        );
    }
    // The mirrors' way to the track: its JetStream API, from the hub.
    let info = home
        .request(
            paddock::protocol::subjects::js_domain_info("track"),
            "".into(),
        )
        .await
        .unwrap();
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    assert_eq!(info["domain"], "track", "{info}");
    let _ = std::fs::remove_dir_all(&pair.dir);
}
