//! Several processors behind one subject space: any of them answers any query with
//! the same data, nothing is lost or counted twice, and killing one keeps the
//! service answering.

use std::time::{Duration, Instant};

use crate::support::*;
use futures::StreamExt;
use serde_json::Value;

async fn request(client: &async_nats::Client, subject: &str, body: String) -> Answer {
    Answer::from(
        client
            .request(subject.to_string(), body.into())
            .await
            .expect("a processor answers"),
    )
}

/// The counters of each of `n` processors, from `$SRV.STATS.sessions` (every
/// instance answers; each endpoint's `data` is its `sessions.stats`).
async fn stats_of_each(client: &async_nats::Client, n: usize) -> Vec<Value> {
    each_processor(client, "$SRV.STATS.sessions", n)
        .await
        .into_iter()
        .map(|stats| stats["endpoints"][0]["data"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processors_answer_alike_and_one_can_die() {
    let server = NatsServer::start();
    let url = server.url();
    let mut a = Some(serve_binary(&url, &[]));
    let b = serve_binary(&url, &[]);
    let client = connect(&url).await;
    wait_for_processors(&client, 2).await;

    // Creates land on either processor (queue group); each is readable at once,
    // whichever processor answers the get.
    let mut ids = Vec::new();
    for _ in 0..30 {
        let id = create(&client).await;
        request(&client, "sessions.get", id_body(&id)).await.ok();
        ids.push(id);
    }
    publish_laps(&client, &ids, 1..=20).await;
    sync(&client).await;
    // Each processor, asked by itself ($SRV.STATS reaches every instance, where a
    // get reaches one at random): every session and every frame.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let each = stats_of_each(&client, 2).await;
        let complete = |s: &Value| s["live_sessions"] == 30 && s["telemetry_frames"] == 600;
        if each.iter().all(complete) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every processor has every frame: {each:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in &ids {
        let doc = request(&client, "sessions.get", id_body(id)).await.ok();
        assert_eq!(doc["telemetry"]["lap"], 20, "the last frame");
    }

    // Deletes become visible everywhere within moments.
    for id in &ids[..5] {
        request(&client, "sessions.delete", id_body(id)).await.ok();
    }
    // Every processor has ended them (asked each, as above), and so answers 404.
    let deadline = Instant::now() + PATIENCE;
    while !stats_of_each(&client, 2)
        .await
        .iter()
        .all(|s| s["live_sessions"] == 25 && s["sessions_deleted"] == 5)
    {
        assert!(
            Instant::now() < deadline,
            "a delete did not reach every processor"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &ids[..5] {
        request(&client, "sessions.get", id_body(id))
            .await
            .expect_error(404);
    }
    for _ in 0..4 {
        let stats = request(&client, "sessions.stats", String::new()).await.ok();
        assert_eq!(stats["live_sessions"], 25, "{stats}");
        assert_eq!(stats["sessions_created"], 30, "not counted twice: {stats}");
        assert_eq!(stats["sessions_deleted"], 5, "{stats}");
    }

    // One processor dies without warning; the other keeps answering, with all data.
    let mut victim = a.take().unwrap();
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    for lap in 21..=25 {
        for id in &ids[5..] {
            client
                .publish(format!("session.{id}.telemetry"), frame(lap).into())
                .await
                .unwrap();
        }
    }
    sync(&client).await;
    for id in &ids[5..] {
        let doc = request(&client, "sessions.get", id_body(id)).await.ok();
        assert_eq!(doc["telemetry"]["lap"], 25);
    }
    let list = request(&client, "sessions.list", String::new()).await.ok();
    assert_eq!(list["total"], 25);
    let created = request(&client, "sessions.create", String::new())
        .await
        .ok();
    assert!(created["session_id"].is_string());
    assert_eq!(b.stop("-TERM"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_is_announced_once_however_many_processors_see_it() {
    let server = NatsServer::start();
    let url = server.url();
    let args = ["serve", "--nats-url", &url, "--expire-after", "1s"];
    let (a, b) = (Running::spawn(&args), Running::spawn(&args));
    let client = connect(&url).await;
    wait_for_processors(&client, 2).await;
    let (_feed_client, mut feed) = subscriber(&url, "sessions.events.expired".into()).await;
    let id = create(&client).await;
    let event: Value = serde_json::from_slice(&next(&mut feed).await.payload).unwrap();
    assert_eq!(event["session_id"], id.as_str());
    let again = tokio::time::timeout(Duration::from_secs(2), feed.next()).await;
    assert!(again.is_err(), "announced twice: {again:?}");
    for _ in 0..4 {
        let stats = request(&client, "sessions.stats", String::new()).await.ok();
        assert_eq!(stats["sessions_expired"], 1, "{stats}");
    }
    assert_eq!((a.stop("-TERM"), b.stop("-TERM")), (0, 0));
}

/// An alert with two processors (#29): both check the session and find the
/// same raise and clear, and each is announced once; a processor restarted
/// while it is raised holds it (no second raise) and the clear still comes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_is_announced_once_however_many_processors_check_it() {
    let server = NatsServer::start();
    let url = server.url();
    let quiet = ["--alert-stale", "60"];
    let mut a = serve_binary(&url, &quiet);
    let b = serve_binary(&url, &quiet);
    let client = connect(&url).await;
    wait_for_processors(&client, 2).await;
    let id = create(&client).await;
    let (_watcher, mut alerts) = subscriber(&url, format!("session.{id}.alerts")).await;
    let brakes = |fl: f64| {
        serde_json::json!({"lap": 1, "brake_temps": {"fl": fl, "fr": 500, "rl": 400, "rr": 400}})
            .to_string()
    };
    let send = |body: String| {
        let (client, subject) = (client.clone(), format!("session.{id}.telemetry"));
        async move {
            client.publish(subject, body.into()).await.unwrap();
            client.flush().await.unwrap();
        }
    };
    let quiet_for = async |alerts: &mut async_nats::Subscriber, what: &str| {
        let more = tokio::time::timeout(Duration::from_millis(2500), alerts.next()).await;
        assert!(more.is_err(), "{what}: {more:?}");
    };

    let expect = async |alerts: &mut async_nats::Subscriber, state: &str| {
        let event: Value = serde_json::from_slice(&next(alerts).await.payload).unwrap();
        assert_eq!(
            (&event["state"], &event["kind"]),
            (&state.into(), &"brake_hot".into())
        );
        quiet_for(alerts, &format!("{state} twice")).await;
    };

    send(brakes(750.0)).await;
    expect(&mut alerts, "raised").await;

    // A restarts while the brake is still hot: nothing new to say.
    assert_eq!(a.stop("-TERM"), 0);
    a = serve_binary(&url, &quiet);
    wait_for_processors(&client, 2).await;
    send(brakes(760.0)).await;
    quiet_for(&mut alerts, "raised again after a restart").await;

    // Cooled: cleared once.
    send(brakes(500.0)).await;
    expect(&mut alerts, "cleared").await;
    assert_eq!((a.stop("-TERM"), b.stop("-TERM")), (0, 0));
}

/// A processor that restarts while another acknowledges setups serves the last
/// acknowledged setup of every session (#40): what was acknowledged between its
/// loading the bucket and its subscribing is taken from the other's stored
/// copy, not left until the session's next setup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_processor_serves_every_setup_acknowledged_meanwhile() {
    const SESSIONS: usize = 2_000;
    let server = NatsServer::start();
    let url = server.url();
    let a = serve_binary(&url, &["--create-limit", "0"]);
    let b = serve_binary(&url, &["--create-limit", "0"]);
    let client = connect(&url).await;
    wait_for_processors(&client, 2).await;
    let ids: Vec<String> = futures::stream::iter(0..SESSIONS)
        .map(|_| create(&client))
        .buffer_unordered(32)
        .collect()
        .await;
    let setup = |id: &str, rev: usize| {
        let client = client.clone();
        let id = id.to_string();
        async move {
            ask(
                &client,
                &format!("session.{id}.setup"),
                format!(r#"{{"rev": {rev}}}"#),
            )
            .await
            .ok();
        }
    };
    futures::stream::iter(ids.iter().map(|id| setup(id, 0)))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;

    // A stops; B alone acknowledges setups from here, round after round, all
    // through A's start, until A answers again.
    assert_eq!(a.stop("-TERM"), 0);
    let mut last = vec![0; SESSIONS];
    let mut round = 0;
    let mut a = None;
    loop {
        round += 1;
        for chunk in (0..SESSIONS).collect::<Vec<_>>().chunks(100) {
            futures::stream::iter(chunk.iter().map(|&k| setup(&ids[k], round)))
                .buffer_unordered(32)
                .collect::<Vec<_>>()
                .await;
            for &k in chunk {
                last[k] = round;
            }
            if a.is_none() {
                a = Some(serve_binary(&url, &["--create-limit", "0"]));
            } else if paddock::client::processors_answering(&client)
                .await
                .unwrap()
                >= 2
            {
                break;
            }
        }
        if paddock::client::processors_answering(&client)
            .await
            .unwrap()
            >= 2
        {
            break;
        }
    }
    // Only A answers now.
    assert_eq!(b.stop("-TERM"), 0);
    wait_for_processors(&client, 1).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let served: Vec<(usize, Value)> = futures::stream::iter(0..SESSIONS)
            .map(|k| {
                let client = client.clone();
                let id = ids[k].clone();
                async move {
                    let doc = ask(&client, &format!("sessions.get.{id}"), String::new())
                        .await
                        .ok();
                    (k, doc["setup"]["rev"].clone())
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let behind: Vec<String> = served
            .iter()
            .filter(|(k, rev)| *rev != last[*k])
            .map(|(k, rev)| format!("{}: served {rev}, acknowledged {}", ids[*k], last[*k]))
            .collect();
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted processor serves {} older setups than acknowledged ({round} rounds), \
             e.g. {:?}",
            behind.len(),
            &behind[..behind.len().min(3)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(a);
}
