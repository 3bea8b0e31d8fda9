//! docs/PROTOCOL.md's examples are captures: each block marked
//! `<!-- capture: <name> -->` is what this scenario gets from the binary, written
//! in `nats` CLI form. Re-capture them after a change to the contract with
//!
//! ```console
//! cargo test --test it docs::capture -- --ignored
//! ```
//!
//! which rewrites those blocks in place. The default suite checks that every
//! marked block says what the binary answers today — every line, the keys of
//! every JSON object in the binary's order, and every value but those that
//! differ from run to run — so a reply that changes fails CI until the docs are
//! re-captured. Ids, times and instance ids are compared as such, and numbers
//! by kind only (integer or not): counters, sizes and clocks differ by run.

use futures::StreamExt;
use paddock::protocol::payload::Pointer;

use crate::support::*;

const PROTOCOL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "rewrites docs/PROTOCOL.md: run by hand after a contract change"]
async fn capture() {
    let doc = std::fs::read_to_string(PROTOCOL).unwrap();
    let mut rewritten = doc.clone();
    for (name, block) in scenario().await {
        rewritten = replace_block(&rewritten, name, &block);
    }
    std::fs::write(PROTOCOL, rewritten).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_examples_are_what_the_binary_answers() {
    let doc = std::fs::read_to_string(PROTOCOL).unwrap();
    for (name, block) in scenario().await {
        let documented = block_of(&doc, name)
            .unwrap_or_else(|| panic!("docs/PROTOCOL.md has no block marked capture: {name}"));
        let (documented, answered) = (shape(&documented), shape(&block));
        if let Some(at) = (0..documented.len().max(answered.len()))
            .find(|&i| documented.get(i) != answered.get(i))
        {
            panic!(
                "docs/PROTOCOL.md's '{name}' example differs from what the binary answers \
                 in its line {} (blank lines not counted):\n  documented: {}\n  answered:   {}\n\
                 (re-capture: cargo test --test it docs::capture -- --ignored):\n{block}",
                at + 1,
                documented.get(at).map_or("(nothing)", String::as_str),
                answered.get(at).map_or("(nothing)", String::as_str),
            );
        }
    }
}

/// Requests in `nats` CLI form with their replies.
struct Console {
    nats: async_nats::Client,
    text: String,
}

impl Console {
    fn new(nats: &async_nats::Client) -> Self {
        Console {
            nats: nats.clone(),
            text: String::new(),
        }
    }

    /// `$ nats req <subject> <shown>` and its reply, members named in
    /// `cut` shown as `{…}` / `[…]`.
    async fn req(&mut self, subject: &str, body: &str, shown: &str, cut: &[&str]) {
        let reply = self
            .nats
            .request(subject.to_string(), body.to_string().into())
            .await
            .unwrap();
        // A blank line between exchanges, not after a command without output.
        let after_command = self
            .text
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("$ "));
        if !self.text.is_empty() && !after_command {
            self.text.push('\n');
        }
        let quoted = if subject.contains('$') {
            format!("'{subject}'")
        } else {
            subject.to_string()
        };
        self.text
            .push_str(&format!("$ nats req {quoted} {shown}\n"));
        if let Some(headers) = &reply.headers {
            for name in ["Nats-Service-Error-Code", "Nats-Service-Error"] {
                if let Some(value) = headers.get(name) {
                    self.text.push_str(&format!("{name}: {value}\n"));
                }
            }
        }
        let body = std::str::from_utf8(&reply.payload).unwrap();
        self.text.push_str(&abbreviate(body, cut));
        self.text.push('\n');
    }

    fn line(&mut self, line: &str) {
        if !self.text.is_empty() && line.starts_with('$') {
            self.text.push('\n');
        }
        self.text.push_str(line);
        self.text.push('\n');
    }

    fn take(&mut self) -> String {
        std::mem::take(&mut self.text)
    }
}

/// `'<body>'` as a shell would be given it.
fn quoted(body: &str) -> String {
    format!("'{body}'")
}

/// The members at `cut` (JSON pointers) replaced by `{…}` or `[…]`.
fn abbreviate(body: &str, cut: &[&str]) -> String {
    let mut text = body.to_string();
    for pointer in cut {
        let pointer = Pointer::parse(pointer).unwrap();
        if let Some(range) = pointer.find(text.as_bytes()) {
            let with = match text.as_bytes()[range.start] {
                b'[' => "[…]",
                b'{' => "{…}",
                _ => continue,
            };
            text.replace_range(range, with);
        }
    }
    text
}

/// The text of the next message on `sub` whose JSON `want` accepts, failing
/// the test after [`PATIENCE`].
async fn next_such(
    sub: &mut async_nats::Subscriber,
    what: &str,
    want: impl Fn(&serde_json::Value) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let message = tokio::time::timeout_at(deadline, sub.next())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {PATIENCE:?}"))
            .unwrap();
        let text = String::from_utf8(message.payload.to_vec()).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        if want(&doc) {
            return text;
        }
    }
}

/// Every documented example.
async fn scenario() -> Vec<(&'static str, String)> {
    let server = NatsServer::start();
    let url = server.url();
    let _processor = serve_binary(&url, &[]);
    let nats = connect(&url).await;
    wait_for_processors(&nats, 1).await;
    let mut announcements = nats.subscribe("sessions.events.>").await.unwrap();
    sync(&nats).await;
    let mut c = Console::new(&nats);
    let mut blocks = Vec::new();

    c.req("sessions.create", "{}", &quoted("{}"), &[]).await;
    blocks.push(("create", c.take()));
    let id = create(&nats).await;

    let setup = include_str!("../data/setup.json");
    c.req(
        &format!("session.{id}.setup"),
        setup,
        "\"$(cat tests/data/setup.json)\"",
        &[],
    )
    .await;
    c.req(
        &format!("session.{id}.setup"),
        "{\"wing\": ",
        &quoted("{\"wing\": "),
        &[],
    )
    .await;
    blocks.push(("setup", c.take()));
    nats.publish(format!("session.{id}.telemetry"), TELEMETRY.into())
        .await
        .unwrap();

    let body = format!("{{\"session_id\": \"{id}\"}}");
    c.req(
        "sessions.get",
        &body,
        &quoted(&body),
        &["/setup", "/telemetry", "/stats"],
    )
    .await;
    blocks.push(("get", c.take()));
    c.req("sessions.list", "{}", &quoted("{}"), &[]).await;
    blocks.push(("list", c.take()));
    c.req("sessions.stats", "", "''", &[]).await;
    blocks.push(("stats", c.take()));

    let nope = "{\"session_id\": \"nope\"}";
    c.req("sessions.get", nope, &quoted(nope), &[]).await;
    let unknown = "{\"session_id\": \"00000000-0000-4000-8000-000000000000\"}";
    c.req("sessions.get", unknown, &quoted(unknown), &[]).await;
    blocks.push(("errors", c.take()));

    // Lap history: three laps of three frames each into a session of its own.
    let laps_id = create(&nats).await;
    let mut announced = nats
        .subscribe(format!("session.{laps_id}.lap"))
        .await
        .unwrap();
    for lap in 1..=3u32 {
        for lap_time in [0.0_f64, 70.0, 140.2] {
            let fuel = 60.0 - f64::from(lap - 1) * 1.2 - lap_time / 175.0;
            let last = (lap > 1).then(|| 213.913 + f64::from(lap - 1));
            // Written by hand: a sim's field order, which the records keep.
            let last = last.map_or("null".to_string(), |t| format!("{t:.3}"));
            let frame = format!(
                "{{\"lap\":{lap},\"lap_time\":{lap_time:.1},\"fuel\":{:.1},\"last_lap_time\":{last}}}",
                (fuel * 10.0_f64).round() / 10.0
            );
            nats.publish(format!("session.{laps_id}.telemetry"), frame.into())
                .await
                .unwrap();
        }
    }
    let first = tokio::time::timeout(PATIENCE, announced.next())
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(PATIENCE, announced.next())
        .await
        .unwrap();
    let page = "{\"from_lap\": 2, \"limit\": 1}";
    c.req(
        &format!("sessions.laps.{laps_id}"),
        page,
        &quoted(page),
        &[],
    )
    .await;
    c.line(&format!("$ nats sub 'session.{laps_id}.lap'"));
    c.line(std::str::from_utf8(&first.payload).unwrap());
    c.line("{\"lap\":2,…}");
    let zero = "{\"limit\": 0}";
    c.req(
        &format!("sessions.laps.{laps_id}"),
        zero,
        &quoted(zero),
        &[],
    )
    .await;
    blocks.push(("laps", c.take()));

    // Traces: two short laps with lap_distance into a session of their own,
    // the second slower (0.25 s per 10 m against 0.2 s).
    let trace_id = create(&nats).await;
    let mut trace_laps = nats
        .subscribe(format!("session.{trace_id}.lap"))
        .await
        .unwrap();
    let mut trace_frames: Vec<String> = Vec::new();
    for (lap, pace, speed) in [(1u32, 0.2_f64, 180.0_f64), (2, 0.25, 144.0)] {
        for k in 0..=4u32 {
            trace_frames.push(format!(
                "{{\"lap\":{lap},\"lap_time\":{:.2},\"lap_distance\":{:.1},\"speed\":{speed:.1},\"gear\":5}}",
                f64::from(k) * pace,
                f64::from(k) * 10.0
            ));
        }
    }
    trace_frames.push("{\"lap\":3,\"lap_time\":0.0,\"lap_distance\":0.0}".into());
    for frame in trace_frames {
        nats.publish(format!("session.{trace_id}.telemetry"), frame.into())
            .await
            .unwrap();
    }
    for _ in 0..2 {
        tokio::time::timeout(PATIENCE, trace_laps.next())
            .await
            .unwrap();
    }
    let trace = "{\"lap\": 2, \"channels\": [\"speed\", \"gear\"], \"step_m\": 10}";
    c.req(
        &format!("sessions.trace.{trace_id}"),
        trace,
        &quoted(trace),
        &[],
    )
    .await;
    let compare = "{\"lap\": 2, \"against\": {\"lap\": 1}, \"minisectors\": 2, \"channels\": [\"speed\"], \"step_m\": 10}";
    c.req(
        &format!("sessions.compare.{trace_id}"),
        compare,
        &quoted(compare),
        &["/lap", "/reference"],
    )
    .await;
    let missing = "{\"lap\": 7}";
    c.req(
        &format!("sessions.trace.{trace_id}"),
        missing,
        &quoted(missing),
        &[],
    )
    .await;
    blocks.push(("trace", c.take()));

    c.req("sessions.delete", &body, &quoted(&body), &["/session"])
        .await;
    blocks.push(("delete", c.take()));
    // The deleting processor archived the session before it replied.
    c.req("sessions.archive.list", "{}", &quoted("{}"), &[])
        .await;
    c.req("sessions.archive.get", &body, &quoted(&body), &["/session"])
        .await;
    blocks.push(("archive", c.take()));

    c.line("$ nats micro ls");
    c.req("$SRV.PING.sessions", "", "''", &[]).await;
    c.req("$SRV.INFO.sessions", "", "''", &["/endpoints"]).await;
    blocks.push(("discovery", c.take()));

    // The announcements of `id`, created and deleted above.
    c.line("$ nats sub 'sessions.events.>'");
    for event in ["created", "deleted"] {
        let text = next_such(&mut announcements, event, |doc| {
            doc["session_id"] == id.as_str() && doc["event"] == event
        })
        .await;
        c.line(&abbreviate(&text, &["/session"]));
    }
    blocks.push(("events", c.take()));

    // Stints, an alert and the tower, from race.rs's scripted race run by a
    // labelled car.
    let labels = "{\"team\": \"Blue\", \"car\": \"#7\"}";
    let car = ask(&nats, "sessions.create", labels.into()).await.ok()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut alerts = nats
        .subscribe(format!("session.{car}.alerts"))
        .await
        .unwrap();
    let mut tower = nats.subscribe("team.Blue.tower").await.unwrap();
    let mut frames = crate::race::scripted_race_frames();
    let mut last = frames.last().unwrap().clone();
    // On lap 13, 5 L in the tank at 3 L a lap: fuel_low. With the readings
    // a sim adds, so the tower shows its fields.
    for (key, value) in serde_json::json!({"fuel": 5.0, "session_time": 1260.0,
        "session_time_left": 2340.0, "position": 3, "gap_ahead": 1.5, "best_lap_time": 99.8,
        "tyre_compound": "soft", "tyre_age_laps": 7})
    .as_object()
    .unwrap()
    {
        last[key] = value.clone();
    }
    frames.push(last);
    for frame in frames {
        nats.publish(format!("session.{car}.telemetry"), frame.to_string().into())
            .await
            .unwrap();
    }
    // Answered after the frames before it are applied.
    c.req(&format!("sessions.stints.{car}"), "", "''", &[])
        .await;
    blocks.push(("stints", c.take()));
    let text = next_such(&mut alerts, "fuel_low raised", |doc| {
        doc["kind"] == "fuel_low" && doc["state"] == "raised"
    })
    .await;
    c.line(&format!("$ nats sub 'session.{car}.alerts'"));
    c.line(&text);
    blocks.push(("alert-event", c.take()));
    let text = next_such(&mut tower, "tower with the car's alert", |doc| {
        doc["cars"][0]["fuel"] == 5.0 && doc["cars"][0]["alerts"].is_array()
    })
    .await;
    c.line("$ nats sub 'team.Blue.tower'");
    c.line(&text);
    blocks.push(("tower", c.take()));

    // Expiry, on a processor of its own that ends sessions after a second.
    let quick = NatsServer::start();
    let _expiring = serve_binary(&quick.url(), &["--expire-after", "1s"]);
    let quick_nats = connect(&quick.url()).await;
    wait_for_processors(&quick_nats, 1).await;
    let mut expired = quick_nats
        .subscribe("sessions.events.expired")
        .await
        .unwrap();
    sync(&quick_nats).await;
    let gone = create(&quick_nats).await;
    let text = next_such(&mut expired, "expired", |doc| {
        doc["session_id"] == gone.as_str()
    })
    .await;
    c.line("$ nats sub 'sessions.events.expired'");
    c.line(&abbreviate(&text, &["/session"]));
    blocks.push(("expired", c.take()));
    blocks
}

/// The marked block's text (between its fences, indentation removed).
fn block_of(doc: &str, name: &str) -> Option<String> {
    let (start, end, indent) = block_range(doc, name)?;
    Some(
        doc[start..end]
            .lines()
            .map(|l| l.strip_prefix(indent.as_str()).unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Where the body of the block marked `name` is, and its fence's indentation.
fn block_range(doc: &str, name: &str) -> Option<(usize, usize, String)> {
    let marker = format!("<!-- capture: {name} -->\n");
    let after = doc.find(&marker)? + marker.len();
    let fence_line_end = after + doc[after..].find('\n')?;
    let fence = &doc[after..fence_line_end];
    let indent = fence[..fence.find("```")?].to_string();
    let start = fence_line_end + 1;
    let close = format!("\n{indent}```");
    let end = start + doc[start..].find(&close)?;
    Some((start, end, indent))
}

fn replace_block(doc: &str, name: &str, block: &str) -> String {
    let (start, end, indent) =
        block_range(doc, name).unwrap_or_else(|| panic!("no block marked capture: {name}"));
    let body: Vec<String> = block
        .trim_end()
        .lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{indent}{l}")
            }
        })
        .collect();
    format!("{}{}{}", &doc[..start], body.join("\n"), &doc[end..])
}

/// What is compared, line by line: text as it is, JSON as its keys (in
/// order, recursively) and values. Ids and times are written `<id>` and
/// `<time>` wherever they are, a micro instance id (`id`, `processor`) as
/// `<instance>`, and a number as `int` or `num`.
fn shape(block: &str) -> Vec<String> {
    block
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            let line = normalised(line);
            if line.starts_with('{') || line.starts_with('[') {
                let text = line.replace("{…}", "null").replace("[…]", "null");
                let text = text.replace(",…}", "}");
                keys(&text)
            } else {
                line
            }
        })
        .collect()
}

/// `text` with every UUID written `<id>` and every RFC 3339 UTC time `<time>`.
fn normalised(text: &str) -> String {
    let bytes = text.as_bytes();
    let matches = |at: usize, pattern: &str| {
        pattern.len() <= bytes.len() - at
            && pattern.bytes().zip(&bytes[at..]).all(|(p, b)| match p {
                b'x' => b.is_ascii_hexdigit(),
                b'9' => b.is_ascii_digit(),
                p => p == *b,
            })
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if matches(at, "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx") {
            out.extend_from_slice(b"<id>");
            at += 36;
        } else if matches(at, "9999-99-99T99:99:99") {
            let mut end = at + 19;
            if bytes.get(end) == Some(&b'.') {
                end += 1;
                while bytes.get(end).is_some_and(u8::is_ascii_digit) {
                    end += 1;
                }
            }
            if bytes.get(end) == Some(&b'Z') {
                end += 1;
            }
            out.extend_from_slice(b"<time>");
            at = end;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).expect("only ASCII was replaced")
}

/// Keys whose values are an instance's id, different in every run.
const INSTANCE_KEYS: [&str; 2] = ["id", "processor"];

/// The keys and values of a JSON text, in order, recursively; numbers as their
/// kind, since counters and clocks differ from run to run.
fn keys(text: &str) -> String {
    use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
    struct Shape(String);
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Shape;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
            let mut out = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                let value: Shape = map.next_value_seed(Seed)?;
                let value = if INSTANCE_KEYS.contains(&key.as_str()) {
                    "<instance>".to_string()
                } else {
                    value.0
                };
                out.push(format!("{key}:{value}"));
            }
            Ok(Shape(format!("{{{}}}", out.join(","))))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element_seed(Seed)? {
                out.push(item.0);
            }
            Ok(Shape(format!("[{}]", out.join(","))))
        }
        fn visit_bool<E>(self, v: bool) -> Result<Shape, E> {
            Ok(Shape(v.to_string()))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
            Ok(Shape("int".into()))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
            Ok(Shape("int".into()))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
            Ok(Shape("num".into()))
        }
        fn visit_str<E>(self, v: &str) -> Result<Shape, E> {
            Ok(Shape(format!("{v:?}")))
        }
        fn visit_unit<E>(self) -> Result<Shape, E> {
            Ok(Shape("null".into()))
        }
    }
    struct Seed;
    impl<'de> serde::de::DeserializeSeed<'de> for Seed {
        type Value = Shape;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Shape, D::Error> {
            d.deserialize_any(V)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    match de.deserialize_any(V) {
        Ok(shape) => shape.0,
        Err(e) => format!("not JSON ({e}): {text}"),
    }
}
