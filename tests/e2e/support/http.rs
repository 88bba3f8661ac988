//! A minimal HTTP/1.1 client for the host's metrics and health endpoints
//! (one request per connection, `Connection: close`), the pieces of a
//! misbehaving one (half-sent requests, event streams kept open), the host's
//! open files, and free ports.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

/// `GET path` on 127.0.0.1:`port`; `None` if nothing listens there (yet).
pub fn get(port: u16, path: &str) -> Option<Answer> {
    get_with(port, path, &[("Host", "127.0.0.1")])
}

/// `GET path` with exactly these header lines besides `Connection: close`
/// (a `Host` only if given); `None` if nothing listens or answers.
pub fn get_with(port: u16, path: &str, headers: &[(&str, &str)]) -> Option<Answer> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let lines: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\n{lines}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    conn.read_to_string(&mut raw).ok()?;
    answer(&raw)
}

/// `GET path` with a bearer `token`, parsed as JSON: `(status, body)`.
pub fn get_json_as(port: u16, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Host", "127.0.0.1")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    let answer = get_with(port, path, &headers).unwrap_or_else(|| panic!("{path} answers"));
    let json = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("{path}: non-JSON {:?}: {e}", answer.body));
    (answer.status, json)
}

/// A whole answer read off a connection (`None` if it is not HTTP).
fn answer(raw: &str) -> Option<Answer> {
    let (head, body) = raw.split_once("\r\n\r\n")?;
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "this client reads only sized bodies: {head}"
    );
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Answer {
        status,
        body: body.to_owned(),
    })
}

/// `POST path` with `body` on 127.0.0.1:`port`, with a bearer `token` if
/// given; panics if nothing answers.
pub fn post(port: u16, path: &str, token: Option<&str>, content_type: &str, body: &[u8]) -> Answer {
    post_from(port, "127.0.0.1", path, token, content_type, body)
}

/// [`post`] naming `host` in the `Host` header.
pub fn post_from(
    port: u16,
    host: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> Answer {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("the listener answers");
    conn.set_read_timeout(Some(Duration::from_secs(90)))
        .expect("a read timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        conn,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("the request goes out");
    // A server refusing a body too large answers and closes early; what
    // it answered is still there to read.
    let _ = conn.write_all(body);
    let mut raw = Vec::new();
    let _ = conn.read_to_end(&mut raw);
    answer(&String::from_utf8_lossy(&raw)).expect("an HTTP answer with a status")
}

/// `POST path` with a JSON body; the answer's body parsed as JSON.
pub fn post_json(
    port: u16,
    path: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let answer = post(
        port,
        path,
        token,
        "application/json",
        body.to_string().as_bytes(),
    );
    let json = serde_json::from_str(&answer.body).unwrap_or_else(|e| {
        panic!(
            "{path} answered {} with non-JSON {:?}: {e}",
            answer.status, answer.body
        )
    });
    (answer.status, json)
}

/// `GET path`, parsed as JSON (panics unless it answers 200).
pub fn get_json(port: u16, path: &str) -> serde_json::Value {
    let answer = get(port, path).unwrap_or_else(|| panic!("{path} answers"));
    assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    serde_json::from_str(&answer.body).expect("JSON")
}

/// The data of the first server-sent event named `name` on `path` that
/// `wanted` accepts (a chunked stream, read until such an event is whole).
pub fn first_event(
    port: u16,
    path: &str,
    name: &str,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("the listener answers");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a read timeout");
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("the request goes out");
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let marker = format!("event: {name}\ndata: ");
    loop {
        let n = conn.read(&mut buf).expect("the event stream goes on");
        assert!(n > 0, "the event stream ended before a {name} event");
        raw.extend_from_slice(&buf[..n]);
        let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..split]);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let body = dechunk(&raw[split + 4..]);
        let body = String::from_utf8_lossy(&body);
        let mut rest = &body[..];
        while let Some(at) = rest.find(&marker) {
            let data = &rest[at + marker.len()..];
            let Some(end) = data.find("\n\n") else {
                break;
            };
            let event: serde_json::Value =
                serde_json::from_str(&data[..end]).expect("the event's data is JSON");
            if wanted(&event) {
                return event;
            }
            rest = &data[end..];
        }
    }
}

/// The payload of a chunked body read so far (a chunk cut short is kept
/// as far as it goes).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let Some(size) = std::str::from_utf8(&body[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
        else {
            break;
        };
        let rest = &body[eol + 2..];
        let take = size.min(rest.len());
        out.extend_from_slice(&rest[..take]);
        if take < size {
            break;
        }
        body = rest.get(size + 2..).unwrap_or(&[]);
    }
    out
}

/// Files the process `pid` has open now.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("reading /proc/<pid>/fd")
        .count()
}

/// A connection to the listener that sent `head` and nothing more.
pub fn half_sent(port: u16, head: &str) -> TcpStream {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connects");
    conn.write_all(head.as_bytes()).expect("the head goes out");
    conn
}

/// Whether the server closed `conn` before `deadline` (end of stream or a
/// reset; anything it answered first is read and ignored).
pub fn closed_before(conn: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        conn.set_read_timeout(Some(left)).expect("a read timeout");
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// An event-stream subscription: the status of its answer, and the
/// connection kept open (`None` once the answer was not a stream).
pub fn subscribe(port: u16) -> (u16, Option<TcpStream>) {
    let mut conn = half_sent(
        port,
        "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n",
    );
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        let n = conn.read(&mut byte).expect("an answer");
        assert_eq!(n, 1, "the connection closed before a status line");
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {line:?}"));
    (status, (status == 200).then_some(conn))
}
