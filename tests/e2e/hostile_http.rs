//! Hostile HTTP clients against `host run --http`: bodies sent without a
//! token, Host headers of other sites (DNS rebinding), dead-letter payloads
//! read without a token, half-sent requests (slowloris), too many event
//! streams and oversized JSON. Each property is checked from the answers,
//! the host's RSS and open files, and Redis.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use streamhost::http::limits::{
    HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD, MAX_JSON_BODY, MAX_SUBSCRIBERS,
};

use crate::dashboard_api::{Fixture, TOKEN, WAIT, pipeline};
use crate::support::eventually;
use crate::support::http::{
    closed_before, get, get_json_as, get_with, half_sent, open_fds, post, post_from, post_json,
    subscribe,
};

#[test]
fn uploads_without_a_token_are_refused_before_their_bodies_are_read() {
    let f = Fixture::start("http-upload-untokened", true, "30s");
    let before = f.host.peak_rss();
    let body = vec![0u8; 60 << 20];
    let answers: Vec<(u16, Duration)> = std::thread::scope(|s| {
        let posts: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    let started = Instant::now();
                    let answer = post(f.port, "/api/plugins/n-1", None, "application/wasm", &body);
                    (answer.status, started.elapsed())
                })
            })
            .collect();
        posts.into_iter().map(|p| p.join().unwrap()).collect()
    });
    for (status, took) in &answers {
        assert_eq!(*status, 401, "{answers:?}");
        assert!(*took < Duration::from_secs(5), "{answers:?}");
    }
    let grown = f.host.peak_rss().saturating_sub(before);
    assert!(
        grown < 32 << 20,
        "six refused 60 MiB uploads raised the host's peak RSS by {} MiB",
        grown >> 20
    );
    // A token-bearing upload still goes through the same route.
    let noop = std::fs::read(crate::support::plugin("noop")).unwrap();
    let answer = post(
        f.port,
        "/api/plugins/n-1",
        Some(TOKEN),
        "application/wasm",
        &noop,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[test]
fn json_bodies_over_the_cap_are_refused_and_those_under_it_served() {
    let f = Fixture::start("http-json-cap", true, "30s");
    let body = |size: usize| {
        let mut b = json!({"count": 2}).to_string();
        // JSON allows whitespace anywhere between tokens.
        b.insert_str(1, &" ".repeat(size.saturating_sub(b.len())));
        b
    };
    let under = body(MAX_JSON_BODY);
    assert_eq!(under.len(), MAX_JSON_BODY);
    let answer = post(
        f.port,
        "/api/consumers/n-1/crash",
        Some(TOKEN),
        "application/json",
        under.as_bytes(),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let over = body(MAX_JSON_BODY + 1);
    let answer = post(
        f.port,
        "/api/consumers/n-1/crash",
        Some(TOKEN),
        "application/json",
        over.as_bytes(),
    );
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert_eq!(
        pipeline(&f.state(), "n-1").unwrap()["crash_next"],
        2,
        "only the request under the cap acted"
    );
}

#[test]
fn hosts_naming_another_site_are_refused() {
    let f = Fixture::start("http-host-check", true, "30s");
    let port = f.port;
    let hostile = [
        "attacker.example",
        &format!("attacker.example:{port}"),
        "127.0.0.1.nip.io",
    ];
    let paths = [
        "/",
        "/assets/app.js",
        "/api/info",
        "/api/status",
        "/api/dlq",
        "/metrics",
        "/api/events",
    ];
    for path in paths {
        for host in hostile {
            let answer = get_with(port, path, &[("Host", host)]).expect("an answer");
            assert_eq!(
                answer.status, 421,
                "{path} with Host {host}: {}",
                answer.body
            );
            assert!(
                answer.body.contains("--http-allowed-host"),
                "{path}: {}",
                answer.body
            );
        }
        let answer = get_with(port, path, &[]).expect("an answer");
        assert_eq!(answer.status, 400, "{path} without Host: {}", answer.body);
    }
    let body = json!({"count": 1}).to_string();
    let refused = post_from(
        port,
        "attacker.example",
        "/api/consumers/n-1/crash",
        Some(TOKEN),
        "application/json",
        body.as_bytes(),
    );
    assert_eq!(refused.status, 421, "{}", refused.body);
    assert_eq!(
        pipeline(&f.state(), "n-1").unwrap()["crash_next"],
        0,
        "a refused Host acted on nothing"
    );
    // Probes send whatever Host their platform uses; the answers carry a
    // verdict only.
    for path in ["/healthz", "/readyz"] {
        let answer = get_with(port, path, &[("Host", "attacker.example")]).expect("an answer");
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    }
}

#[test]
fn ip_literals_localhost_and_the_names_allowed_are_served() {
    let f = Fixture::start_with(
        "http-host-allowed",
        "admin = true\nallowed-hosts = [\"dash.example.test\"]",
        "30s",
    );
    let port = f.port;
    for host in [
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "localhost".to_owned(),
        format!("LocalHost:{port}"),
        format!("dash.example.test:{port}"),
        "DASH.example.test.".to_owned(),
    ] {
        let answer = get_with(port, "/api/info", &[("Host", &host)]).expect("an answer");
        assert_eq!(answer.status, 200, "Host {host}: {}", answer.body);
    }
    let body = json!({"count": 1}).to_string();
    let allowed = post_from(
        port,
        "dash.example.test",
        "/api/consumers/n-1/crash",
        Some(TOKEN),
        "application/json",
        body.as_bytes(),
    );
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert_eq!(pipeline(&f.state(), "n-1").unwrap()["crash_next"], 1);
    let other = get_with(port, "/api/info", &[("Host", "other.example.test")]).expect("an answer");
    assert_eq!(other.status, 421, "{}", other.body);
}

#[test]
fn dead_letter_payloads_need_the_token() {
    let f = Fixture::start("http-payloads", true, "30s");
    let card = "4111111111111111";
    f.redis.add(
        &f.stream,
        &[
            ("type", "order.refunded"),
            ("order_id", "o-1"),
            ("card", card),
        ],
    );
    eventually(WAIT, "the refund dead-lettered", || {
        (f.xlen(&f.dlq) >= 1).then_some(())
    });
    // Without the token: what, why and where, never the entry's fields.
    let (status, list) = get_json_as(f.port, "/api/dlq", None);
    assert_eq!(status, 200, "{list}");
    assert!(!list.to_string().contains(card), "{list}");
    assert_eq!(list["fields_shown"], false, "{list}");
    let record = &list["records"][0];
    assert_eq!(record["kind"], "permanent", "{list}");
    assert!(record["source_id"].is_string(), "{list}");
    assert!(record.get("fields").is_none_or(|v| v.is_null()), "{list}");
    // Nor in what the page and status API show every second.
    let status_body = get(f.port, "/api/status")
        .expect("/api/status answers")
        .body;
    assert!(!status_body.contains(card), "{status_body}");
    assert!(!f.state().to_string().contains(card));
    // A wrong token is refused, the right one reads the fields.
    let (status, answer) = get_json_as(f.port, "/api/dlq", Some("wrong"));
    assert_eq!(status, 401, "{answer}");
    let (status, full) = get_json_as(f.port, "/api/dlq", Some(TOKEN));
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["fields_shown"], true, "{full}");
    assert!(full.to_string().contains(card), "{full}");
    // Replay rows are entries: the token is needed for them too.
    let (status, answer) = post_json(f.port, "/api/replay", None, &json!({"count": 10}));
    assert_eq!(status, 401, "{answer}");
    assert!(!answer.to_string().contains(card));
}

#[test]
fn a_read_only_dashboard_never_shows_payloads() {
    let f = Fixture::start("http-payloads-read-only", false, "30s");
    let card = "5500000000000004";
    f.redis.add(
        &f.stream,
        &[
            ("type", "order.refunded"),
            ("order_id", "o-2"),
            ("card", card),
        ],
    );
    eventually(WAIT, "the refund dead-lettered", || {
        (f.xlen(&f.dlq) >= 1).then_some(())
    });
    for token in [None, Some(TOKEN)] {
        let (status, list) = get_json_as(f.port, "/api/dlq", token);
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["fields_shown"], false, "{list}");
        assert!(!list.to_string().contains(card), "{list}");
    }
}

#[test]
fn half_sent_requests_are_capped_and_timed_out_while_healthz_answers() {
    let f = Fixture::start("http-slowloris", true, "30s");
    let pid = f.host.pid();
    let baseline = open_fds(pid);
    let attack = 300;
    assert!(attack > MAX_CONNECTIONS, "the attack must exceed the cap");
    let mut conns: Vec<TcpStream> = (0..attack)
        .map(|_| half_sent(f.port, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"))
        .collect();
    let opened = Instant::now();
    // The listener keeps answering probes under the attack.
    let live = get(f.port, "/healthz").expect("/healthz answers under the attack");
    assert_eq!(live.status, 200, "{}", live.body);
    let during = open_fds(pid);
    let slack = 24;
    assert!(
        during <= baseline + MAX_CONNECTIONS + slack,
        "{attack} half-sent requests: the host's open files went {baseline} -> {during} (cap {MAX_CONNECTIONS})"
    );
    // Every one of them is closed within the header timeout.
    let deadline = opened + HEADER_READ_TIMEOUT + Duration::from_secs(5);
    let still_open = conns
        .iter_mut()
        .filter_map(|c| (!closed_before(c, deadline)).then_some(()))
        .count();
    assert_eq!(
        still_open,
        0,
        "half-sent requests still open {:?} after the attack began",
        opened.elapsed()
    );
    eventually(WAIT, "the host's open files back down", || {
        (open_fds(pid) <= baseline + slack).then_some(())
    });
    // A complete request is served as before.
    assert_eq!(get(f.port, "/healthz").expect("answers").status, 200);
}

#[test]
fn requests_completed_within_the_header_timeout_are_served() {
    let f = Fixture::start("http-slow-but-timely", false, "30s");
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| half_sent(f.port, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"))
        .collect();
    // The clients are slow on purpose: half the allowed time between the
    // two halves of their heads.
    std::thread::sleep(HEADER_READ_TIMEOUT / 2);
    for conn in &mut slow {
        conn.write_all(b"Connection: close\r\n\r\n")
            .expect("the rest of the head goes out");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a read timeout");
        let mut answer = String::new();
        conn.read_to_string(&mut answer).expect("an answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

#[test]
fn request_heads_up_to_the_cap_are_served_and_larger_ones_refused() {
    let f = Fixture::start("http-head-cap", false, "30s");
    let padded = |size: usize| {
        let pad = "a".repeat(size);
        get_with(
            f.port,
            "/healthz",
            &[("Host", "127.0.0.1"), ("X-Pad", &pad)],
        )
        .expect("an answer")
        .status
    };
    assert_eq!(padded(MAX_HEAD - 1024), 200);
    assert_eq!(padded(MAX_HEAD), 431);
}

#[test]
fn event_stream_subscribers_are_capped() {
    let f = Fixture::start("http-subscribers", false, "30s");
    let mut streams: Vec<TcpStream> = (0..MAX_SUBSCRIBERS)
        .map(|i| match subscribe(f.port) {
            (200, Some(conn)) => conn,
            (status, _) => panic!("subscriber {i} of {MAX_SUBSCRIBERS} answered {status}"),
        })
        .collect();
    let (status, _) = subscribe(f.port);
    assert_eq!(status, 503, "subscriber {} was let in", MAX_SUBSCRIBERS + 1);
    // A subscriber that leaves makes room.
    drop(streams.pop());
    eventually(
        WAIT,
        "a place freed by a subscriber that left",
        || match subscribe(f.port) {
            (200, Some(conn)) => Some(conn),
            _ => None,
        },
    );
}

#[test]
fn at_stop_event_streams_end_idle_connections_close_and_the_host_exits() {
    let mut f = Fixture::start("http-stop", false, "30s");
    let (status, stream) = subscribe(f.port);
    assert_eq!(status, 200);
    let mut stream = stream.expect("an event stream");
    let mut idle = half_sent(f.port, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    f.host.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    assert!(
        closed_before(&mut stream, deadline),
        "the event stream outlived the stop"
    );
    assert!(
        closed_before(&mut idle, deadline),
        "an idle connection outlived the stop"
    );
    assert_eq!(f.host.wait_exit(WAIT).code(), Some(0), "{}", f.host.log());
}
