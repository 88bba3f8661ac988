//! A TCP proxy in front of a [`RedisServer`] that can lose the reply to one
//! chosen command: the command reaches Redis and takes effect, then the
//! connection drops before its answer gets back — the one failure after which
//! a client cannot know whether its command happened; and that can freeze
//! every connection open (a half-open path: kept open, no FIN, no RST,
//! nothing forwarded either way) while new ones are served.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Decides, from a command's arguments, whether its reply is lost.
type Matcher = Box<dyn Fn(&[Vec<u8>]) -> bool + Send>;

/// How long a cut connection stays open after its command went through, so
/// Redis has surely run it before the client sees the connection drop.
const RUN_BEFORE_CUT: Duration = Duration::from_millis(200);

/// A proxy on its own loopback port; stops accepting when dropped.
pub struct LossyProxy {
    port: u16,
    armed: Arc<Mutex<Option<Matcher>>>,
    lost: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// Bumped by [`LossyProxy::freeze`]: connections born before go silent.
    epoch: Arc<AtomicUsize>,
    /// Every connection's client side, to cut ([`LossyProxy::cut_all`]).
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// Until when new connections are closed at once ([`LossyProxy::refuse_for`]).
    refusing: Arc<Mutex<Option<Instant>>>,
    /// Connections forwarded so far.
    accepted: Arc<AtomicUsize>,
}

impl LossyProxy {
    /// Starts forwarding to `redis`.
    pub fn start(redis: &super::RedisServer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = listener.local_addr().expect("proxy addr").port();
        let upstream = redis.addr();
        let proxy = Self {
            port,
            armed: Arc::default(),
            lost: Arc::default(),
            stop: Arc::default(),
            epoch: Arc::default(),
            open: Arc::default(),
            refusing: Arc::default(),
            accepted: Arc::default(),
        };
        let (armed, lost, stop) = (proxy.armed.clone(), proxy.lost.clone(), proxy.stop.clone());
        let (epoch, open, refusing, accepted) = (
            proxy.epoch.clone(),
            proxy.open.clone(),
            proxy.refusing.clone(),
            proxy.accepted.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if refusing
                    .lock()
                    .unwrap()
                    .is_some_and(|until| Instant::now() < until)
                {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                if let Ok(handle) = client.try_clone() {
                    open.lock().unwrap().push(handle);
                }
                accepted.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                Connection::serve(client, server, armed.clone(), lost.clone(), epoch.clone());
            }
        });
        proxy
    }

    /// `redis://127.0.0.1:<proxy port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Loses the reply to the next command `matches` accepts (on whichever
    /// connection sends it), once.
    pub fn lose_reply_once(&self, matches: impl Fn(&[Vec<u8>]) -> bool + Send + 'static) {
        *self.armed.lock().unwrap() = Some(Box::new(matches));
    }

    /// Replies lost so far.
    pub fn lost(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }

    /// Connections forwarded so far (refused ones not counted).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every connection open now, mid-whatever (a read blocked on
    /// Redis, a commit round, a script).
    pub fn cut_all(&self) {
        for conn in self.open.lock().unwrap().drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }

    /// Closes every new connection at once for `how_long` (a server that
    /// cannot be reached for a while).
    pub fn refuse_for(&self, how_long: Duration) {
        *self.refusing.lock().unwrap() = Some(Instant::now() + how_long);
    }

    /// Freezes every connection open now: they stay open and forward
    /// nothing more, either way, as over a network path that went dead
    /// without a word. Connections made later are served.
    pub fn freeze(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One client connection and its upstream.
struct Connection;

impl Connection {
    fn serve(
        client: TcpStream,
        server: TcpStream,
        armed: Arc<Mutex<Option<Matcher>>>,
        lost: Arc<AtomicUsize>,
        epoch: Arc<AtomicUsize>,
    ) {
        let born = epoch.load(Ordering::SeqCst);
        let frozen = move || epoch.load(Ordering::SeqCst) > born;
        let mute = Arc::new(AtomicBool::new(false));
        let (mut from_server, mut to_client) = (
            server.try_clone().expect("clone"),
            client.try_clone().expect("clone"),
        );
        let muted = mute.clone();
        let frozen_too = frozen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n @ 1..) = from_server.read(&mut buf) {
                // Once muted (or frozen), whatever Redis answers is swallowed.
                if !muted.load(Ordering::SeqCst)
                    && !frozen_too()
                    && to_client.write_all(&buf[..n]).is_err()
                {
                    break;
                }
            }
            let _ = to_client.shutdown(Shutdown::Both);
        });
        let (mut from_client, mut to_server) = (client, server);
        std::thread::spawn(move || {
            let mut pending = Vec::new();
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n @ 1..) = from_client.read(&mut buf) {
                if frozen() {
                    // Swallowed: the client's bytes never reach Redis.
                    continue;
                }
                pending.extend_from_slice(&buf[..n]);
                while let Some((len, args)) = parse_command(&pending) {
                    let hit = {
                        let mut armed = armed.lock().unwrap();
                        let hit = armed.as_ref().is_some_and(|m| m(&args));
                        if hit {
                            *armed = None;
                        }
                        hit
                    };
                    if hit {
                        mute.store(true, Ordering::SeqCst);
                    }
                    if to_server.write_all(&pending[..len]).is_err() {
                        return;
                    }
                    pending.drain(..len);
                    if hit {
                        std::thread::sleep(RUN_BEFORE_CUT);
                        lost.fetch_add(1, Ordering::SeqCst);
                        let _ = to_server.shutdown(Shutdown::Both);
                        let _ = from_client.shutdown(Shutdown::Both);
                        return;
                    }
                }
            }
            let _ = to_server.shutdown(Shutdown::Both);
        });
    }
}

/// Matches the fenced claim script's call when it counts a delivery, names
/// `owner` as the entries' required owner ("" for the reaper's "anyone") and
/// includes `id`. Layout (`stream::claims::claim`): `EVALSHA sha 2 stream dlq
/// group owner min_idle target idle count …`. The script is loaded into
/// `redis` first, so the call is one `EVALSHA` that runs rather than one
/// answered `NOSCRIPT` and sent again as `EVAL`.
pub fn counting_claim(
    redis: &super::RedisServer,
    owner: &str,
    id: &str,
) -> impl Fn(&[Vec<u8>]) -> bool + Send + 'static {
    let script = streamhost::stream::scripts::CLAIM.under(None);
    let sha: String = script
        .prepare_invoke()
        .load(&mut redis.conn())
        .expect("SCRIPT LOAD");
    let (owner, id) = (owner.to_owned(), id.to_owned());
    move |args| {
        args.len() > 10
            && args[0].eq_ignore_ascii_case(b"EVALSHA")
            && args[1] == sha.as_bytes()
            && args[6] == owner.as_bytes()
            && args[10] == b"1"
            && args.iter().any(|a| a == id.as_bytes())
    }
}

/// One complete RESP command (`*N` of bulk strings) at the start of `buf`:
/// its length in bytes and its arguments.
fn parse_command(buf: &[u8]) -> Option<(usize, Vec<Vec<u8>>)> {
    let (count, mut at) = parse_line(buf, 0, b'*')?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        let (len, start) = parse_line(buf, at, b'$')?;
        let end = start + len;
        if buf.len() < end + 2 {
            return None;
        }
        args.push(buf[start..end].to_vec());
        at = end + 2;
    }
    Some((at, args))
}

/// `<prefix><number>\r\n` at `at`: the number and where the next line starts.
fn parse_line(buf: &[u8], at: usize, prefix: u8) -> Option<(usize, usize)> {
    if *buf.get(at)? != prefix {
        panic!("the proxy only understands commands sent as arrays of bulk strings");
    }
    let end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
    let n = std::str::from_utf8(&buf[at + 1..end]).ok()?.parse().ok()?;
    Some((n, end + 2))
}
