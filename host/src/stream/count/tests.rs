//! The counting wrapper against a real `redis-server` started here: exact
//! counts both ways, the cursor resumed across script calls, the budget per
//! call, the cap and the peek that tells "exactly N" from "at least N".

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::*;

/// A private redis-server on a free port, killed on drop. There is no skip:
/// without `redis-server` on PATH these tests fail.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    async fn connect(&self) -> MultiplexedConnection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).unwrap();
        let started = Instant::now();
        loop {
            if let Ok(mut con) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut con)
                    .await
                    .is_ok()
            {
                return con;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not answer"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn fill(con: &mut MultiplexedConnection, key: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id: String = redis::cmd("XADD")
            .arg(key)
            .arg("*")
            .arg("n")
            .arg(i)
            .query_async(con)
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

fn steps(cap: u64, budget: u64, page: u64) -> CountSteps {
    CountSteps { cap, budget, page }
}

#[tokio::test]
async fn ranges_are_counted_exactly_both_ways_with_their_last_id() {
    let server = Server::start();
    let mut con = server.connect().await;
    let ids = fill(&mut con, "s", 50).await;
    let all = count(&mut con, "s", "-", "+", 1_000).await.unwrap();
    assert_eq!(
        (all.count, all.exact, all.last.as_deref()),
        (50, true, Some(ids[49].as_str()))
    );
    // Exclusive and inclusive bounds, as XRANGE takes them.
    let mid = count(&mut con, "s", &format!("({}", ids[9]), &ids[19], 1_000)
        .await
        .unwrap();
    assert_eq!(
        (mid.count, mid.exact, mid.last),
        (10, true, Some(ids[19].clone()))
    );
    // Backward from the end, capped at 5: the fifth newest, and more follow.
    let back = count_back(&mut con, "s", "+", "-", 5).await.unwrap();
    assert_eq!(
        (back.count, back.exact, back.last),
        (5, false, Some(ids[45].clone()))
    );
    // A cap equal to the range's size is still exact: the peek finds nothing more.
    let whole = count_back(&mut con, "s", "+", "-", 50).await.unwrap();
    assert_eq!(
        (whole.count, whole.exact, whole.last),
        (50, true, Some(ids[0].clone()))
    );
    assert_eq!(
        next_id(&mut con, "s", &ids[20]).await.unwrap(),
        Some(ids[21].clone())
    );
    assert_eq!(next_id(&mut con, "s", &ids[49]).await.unwrap(), None);
    // A missing key and an empty range hold nothing.
    let none = count(&mut con, "nope", "-", "+", 10).await.unwrap();
    assert_eq!((none.count, none.exact, none.last), (0, true, None));
    let after = count(&mut con, "s", &format!("({}", ids[49]), "+", 10)
        .await
        .unwrap();
    assert_eq!((after.count, after.exact), (0, true));
    // A key of another type is an error, not an empty count.
    let _: () = redis::cmd("SET")
        .arg("str")
        .arg("x")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(count(&mut con, "str", "-", "+", 10).await.is_err());
}

#[tokio::test]
async fn a_count_resumes_from_its_cursor_one_budget_per_call() {
    let server = Server::start();
    let mut con = server.connect().await;
    let ids = fill(&mut con, "s", 10).await;
    // 10 entries, 3 per call in pages of 2: 3 + 3 + 3 (a peek finds one more) + 1.
    let (c, calls) = count_with(&mut con, "s", "-", "+", Walk::Forward, steps(100, 3, 2))
        .await
        .unwrap();
    assert_eq!((c.count, c.exact, calls), (10, true, 4));
    assert_eq!(c.last.as_deref(), Some(ids[9].as_str()));
    // A budget that divides the range: the last full call's peek ends it.
    let (c, calls) = count_with(
        &mut con,
        "s",
        &format!("({}", ids[0]),
        "+",
        Walk::Forward,
        steps(100, 3, 1),
    )
    .await
    .unwrap();
    assert_eq!((c.count, c.exact, calls), (9, true, 3));
    // Backward resumes the same way, from the newer end.
    let (c, calls) = count_with(&mut con, "s", "+", "-", Walk::Backward, steps(100, 4, 3))
        .await
        .unwrap();
    assert_eq!((c.count, c.exact, calls), (10, true, 3));
    assert_eq!(c.last.as_deref(), Some(ids[0].as_str()));
}

#[tokio::test]
async fn a_count_stops_at_its_cap_and_says_more_follow() {
    let server = Server::start();
    let mut con = server.connect().await;
    let ids = fill(&mut con, "s", 10).await;
    // Capped at 7, 3 per call: 3, 3, then a last call of 1.
    let (c, calls) = count_with(&mut con, "s", "-", "+", Walk::Forward, steps(7, 3, 2))
        .await
        .unwrap();
    assert_eq!((c.count, c.exact, calls), (7, false, 3));
    assert_eq!(c.last.as_deref(), Some(ids[6].as_str()));
    let (c, _) = count_with(&mut con, "s", "+", "-", Walk::Backward, steps(7, 3, 2))
        .await
        .unwrap();
    assert_eq!((c.count, c.exact, c.last), (7, false, Some(ids[3].clone())));
    // A cap of 0 is taken as 1: it still tells whether anything is there.
    let (c, calls) = count_with(&mut con, "s", "-", "+", Walk::Forward, steps(0, 3, 2))
        .await
        .unwrap();
    assert_eq!((c.count, c.exact, calls), (1, false, 1));
}

#[tokio::test]
async fn a_count_through_the_largest_possible_id_ends_there() {
    let server = Server::start();
    let mut con = server.connect().await;
    let _ = fill(&mut con, "s", 3).await;
    let top = "18446744073709551615-18446744073709551615";
    let _: String = redis::cmd("XADD")
        .arg("s")
        .arg(top)
        .arg("n")
        .arg("x")
        .query_async(&mut con)
        .await
        .unwrap();
    for budget in [1, 2, 4, 10] {
        let (c, _) = count_with(
            &mut con,
            "s",
            "-",
            "+",
            Walk::Forward,
            steps(100, budget, 1),
        )
        .await
        .unwrap();
        assert_eq!(
            (c.count, c.exact, c.last.as_deref()),
            (4, true, Some(top)),
            "budget {budget}"
        );
    }
}
