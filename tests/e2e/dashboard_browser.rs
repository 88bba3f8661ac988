//! The dashboard in a real headless Chromium, driven through WebDriver
//! (`chromedriver`) against `host demo`: a person's session — stop the
//! producer, crash a consumer, watch its entries wait in the pending table
//! and come back by a reclaim, produce a malformed order, find it in the
//! dead-letter panel and redrive it — every step done by clicking and
//! typing in the page and checked again in Redis. Screenshots of the steps
//! go to `target/screenshots/`; the last one is the README's.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use serde_json::{Value, json};

use crate::support::http::{free_port, get};
use crate::support::{Host, RedisServer, eventually, meta, original_fields};

const TOKEN: &str = "some-test-token";
const STREAM: &str = "demo:events:orders";
const DLQ: &str = "demo:events:orders:dlq";
const WAIT: Duration = Duration::from_secs(45);

#[test]
fn dashboard_runs_the_demo_in_a_real_browser() {
    let Some(browser) = Browser::find() else {
        return;
    };
    let redis = RedisServer::start();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let host = Host::spawn_env(
        &["demo", "--redis", &redis.url(), "--http", &addr],
        &[("STREAMHOST_HTTP_TOKEN", TOKEN)],
    );
    eventually(
        Duration::from_secs(180),
        "the demo's dashboard answers",
        || get(port, "/api/info").filter(|a| a.status == 200),
    );
    let driver = Driver::start(&browser);
    let runtime = session_runtime();
    let started = Instant::now();
    runtime.block_on(async {
        let page = Page::open(&driver, &browser).await;
        // The browser is closed on every way out, a panic included: killing
        // chromedriver alone would leave chromium running.
        let outcome = AssertUnwindSafe(session(&page, &redis, &addr))
            .catch_unwind()
            .await;
        page.client.clone().close().await.ok();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(what)) => panic!("{what}\nhost log:\n{}", host.log()),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    eprintln!("browser session took {:?}", started.elapsed());
}

/// The partitions panel of a host holding some of a leased stream's
/// partitions lists every partition with the host whose lease it is (read
/// here from the lease keys), the other host's included.
#[test]
fn the_partitions_panel_names_each_partitions_owner_in_a_real_browser() {
    let Some(browser) = Browser::find() else {
        return;
    };
    let redis = RedisServer::start();
    let stream = crate::support::key("browser-partitions");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let leased = ["--partitions", "4", "--lease-ttl", "3s"];
    let host = Host::misbehave(&redis, &stream, &[&leased[..], &["--http", &addr]].concat());
    let _other = Host::misbehave(&redis, &stream, &leased);
    let owners: Vec<String> = eventually(
        Duration::from_secs(60),
        "the partitions spread over both hosts",
        || {
            let held: Vec<String> = (0..4)
                .map(|i| crate::support::lease_owner(&redis, &stream, i, "g"))
                .collect::<Option<_>>()?;
            let distinct: std::collections::BTreeSet<&String> = held.iter().collect();
            (distinct.len() == 2).then_some(held)
        },
    );
    let driver = Driver::start(&browser);
    let runtime = session_runtime();
    runtime.block_on(async {
        let page = Page::open(&driver, &browser).await;
        let want = serde_json::to_string(&owners).unwrap();
        let sj = serde_json::to_string(&stream).unwrap();
        let steps = async {
            page.client
                .goto(&format!("http://{addr}/"))
                .await
                .map_err(|e| format!("opening the dashboard: {e}"))?;
            page.wait_js(
                "a row per partition, each naming its lease's holder",
                &format!(
                    "const panel = document.querySelector('[data-testid=partitions]'); \
                     const rows = [...panel.querySelectorAll('tr[data-partition]')]; \
                     return !panel.hidden && JSON.stringify(rows.map((r) => r.dataset.owner)) === JSON.stringify({want}) \
                       && rows.every((r, i) => r.children[1].textContent === '{{' + {sj} + ':' + i + '}}')"
                ),
            )
            .await?;
            page.shot("partitions").await;
            Ok::<(), String>(())
        };
        let outcome = AssertUnwindSafe(steps).catch_unwind().await;
        page.client.clone().close().await.ok();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(what)) => panic!("{what}\nhost log:\n{}", host.log()),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
}

/// The runtime a WebDriver session is driven on.
fn session_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The steps; an `Err` names the step that went wrong.
async fn session(page: &Page, redis: &RedisServer, addr: &str) -> Result<(), String> {
    page.client
        .goto(&format!("http://{addr}/#token={TOKEN}"))
        .await
        .map_err(|e| format!("opening the dashboard: {e}"))?;
    page.wait_js(
        "the page is live with both groups",
        "return document.querySelector('[data-testid=conn-state]').textContent === 'live' \
         && !!document.querySelector('[data-testid=group-card][data-group=notifications]') \
         && !!document.querySelector('[data-testid=group-card][data-group=analytics]')",
    )
    .await?;
    let url = page.client.current_url().await.map_err(|e| e.to_string())?;
    if url.as_str().contains(TOKEN) {
        return Err(format!("the token stays in the address bar: {url}"));
    }
    page.shot("01-loaded").await;

    // A quiet stream makes every later count exact.
    page.fill("#producer-rate", "0").await?;
    page.act("#producer-set").await?;
    page.wait_toast("rate is now 0").await?;
    settle(redis);

    crash_and_reclaim(page, redis).await?;
    dead_letter_and_redrive(page, redis).await?;
    refused_upload(page).await?;
    read_only_without_token(page, addr).await?;

    // The README's picture: the producer running again, charts filled.
    page.fill("#producer-rate", "5").await?;
    page.act("#producer-set").await?;
    page.wait_toast("rate is now 5").await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    // The latency legend names the wait for a worker next to the call times.
    page.wait_js(
        "the latency legend shows the p99 wait for a worker",
        "return [...document.querySelectorAll('[data-testid=chart-legend-item]')].some((li) => /· wait p99 [0-9.]+ ms/.test(li.textContent))",
    )
    .await?;
    // ... and a crashed consumer's entries waiting for the reaper.
    let crashed = "[data-testid=consumer-row][data-group=notifications][data-pipeline]";
    page.fill(&format!("{crashed} [data-testid=crash-count]"), "4")
        .await?;
    page.act(&format!("{crashed} [data-testid=crash-btn]"))
        .await?;
    page.wait_toast("will drop its next 4").await?;
    page.wait_js(
        "entries pending in notifications",
        "return document.querySelectorAll('[data-testid=group-card][data-group=notifications] [data-testid=pending-row]').length >= 2",
    )
    .await?;
    // The picture is of the dashboard, not of the last answer over it.
    page.js("document.querySelector('[data-testid=toast]').textContent = ''")
        .await;
    page.shot("dashboard").await;
    Ok(())
}

/// Crash the only analytics consumer for three deliveries, produce three
/// orders: they wait, pending, in the table until "reclaim now" (or the
/// reaper, whichever is first) hands them back and they are handled.
async fn crash_and_reclaim(page: &Page, redis: &RedisServer) -> Result<(), String> {
    let row = "[data-testid=consumer-row][data-group=analytics][data-pipeline]";
    let names = page
        .js(&format!(
            "const r = document.querySelector('{row}'); return r && [r.dataset.pipeline, r.dataset.consumer]"
        ))
        .await;
    let (pipeline, consumer): (String, String) =
        serde_json::from_value(names).map_err(|_| "no analytics consumer row")?;
    let row = format!("[data-testid=consumer-row][data-pipeline='{pipeline}']");
    page.fill(&format!("{row} [data-testid=crash-count]"), "3")
        .await?;
    page.act(&format!("{row} [data-testid=crash-btn]")).await?;
    page.wait_toast("will drop its next 3").await?;
    page.wait_js(
        "crash next shows 3",
        &format!(
            "return document.querySelector(\"{row} td[data-field=crash-next]\").textContent === '3'"
        ),
    )
    .await?;

    let order = page
        .js("return Array.from(document.querySelectorAll('#produce-type option')).map(o => o.value).find(v => v.startsWith('order.'))")
        .await
        .as_str()
        .map(str::to_owned)
        .ok_or("no order.* event type offered")?;
    page.fill("#produce-count", "3").await?;
    page.select("#produce-type", &order).await?;
    page.act("#produce-btn").await?;
    page.wait_toast("Produced 3").await?;

    let pending_rows = "[data-testid=group-card][data-group=analytics] [data-testid=pending-row]";
    page.wait_js(
        "three entries pending on the crashed consumer",
        &format!(
            "const rows = document.querySelectorAll('{pending_rows}'); \
             return rows.length === 3 && Array.from(rows).every(r => r.dataset.consumer === '{consumer}')"
        ),
    )
    .await?;
    page.shot("02-pending-after-crash").await;

    // Entries must have been idle for the minimum before a claim takes them.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    page.fill(&format!("{row} [data-testid=reclaim-idle]"), "1000")
        .await?;
    page.act(&format!("{row} [data-testid=reclaim-btn]"))
        .await?;
    page.wait_toast(&format!("{pipeline} claimed")).await?;
    page.wait_js(
        "the analytics pending table empties",
        &format!("return document.querySelectorAll('{pending_rows}').length === 0"),
    )
    .await?;
    settle(redis);
    page.shot("03-reclaimed").await;
    Ok(())
}

/// A malformed order is dead-lettered, shown in the panel, and redriven by
/// ticking it and pressing "redrive selected": its record leaves the DLQ and
/// the entry is back in the stream, byte for byte as the record kept it.
async fn dead_letter_and_redrive(page: &Page, redis: &RedisServer) -> Result<(), String> {
    page.fill("#produce-count", "1").await?;
    page.select("#produce-type", "malformed").await?;
    page.act("#produce-btn").await?;
    page.wait_toast("Produced 1 malformed").await?;
    let (source_id, original) = redis.range(STREAM).pop().ok_or("the stream is empty")?;
    // Every group has had its say on it (each may dead-letter it once).
    settle(redis);
    let dead: Vec<_> = redis
        .range_raw(DLQ)
        .into_iter()
        .filter(|(_, r)| meta(r, "source_id") == source_id)
        .collect();
    if dead.is_empty() {
        return Err(format!("no dead letter of the malformed order {source_id}"));
    }

    let rows = format!("[data-testid=dlq-row][data-source-id='{source_id}']");
    page.wait_js(
        "the malformed order in the dead-letter panel",
        &format!(
            "return document.querySelectorAll(\"{rows}\").length === {}",
            dead.len()
        ),
    )
    .await?;
    page.wait_js(
        "the dead letters' fields shown with the token",
        &format!(
            "return document.querySelector('[data-testid=dlq-fields-note]').hidden \
             && document.querySelector(\"{rows} td[data-field=reason]\").title.includes('type=')"
        ),
    )
    .await?;
    page.shot("04-dead-letter").await;
    let last_before = redis.range(STREAM).last().map(|(id, _)| id.clone());

    for (id, _) in &dead {
        page.click(&format!(
            "[data-testid=dlq-row][data-id='{id}'] [data-testid=dlq-select]"
        ))
        .await?;
    }
    page.act("#dlq-redrive-selected").await?;
    page.wait_toast(&format!("moved {}", dead.len())).await?;

    let left: Vec<String> = redis.range(DLQ).into_iter().map(|(id, _)| id).collect();
    if let Some((id, _)) = dead.iter().find(|(id, _)| left.contains(id)) {
        return Err(format!("record {id} is still in the DLQ after its redrive"));
    }
    let back: Vec<_> = redis
        .range_raw(STREAM)
        .into_iter()
        .filter(|(id, _)| {
            last_before
                .as_deref()
                .is_none_or(|l| id_key(id) > id_key(l))
        })
        .collect();
    let kept: Vec<_> = dead.iter().map(|(_, r)| original_fields(r)).collect();
    let returned: Vec<_> = back.iter().map(|(_, f)| f.clone()).collect();
    if returned != kept {
        return Err(format!(
            "the stream got {returned:?} back, the dead letters kept {kept:?} (original {original:?})"
        ));
    }
    page.wait_js(
        "the redriven records leave the panel",
        &format!(
            "return {}.every(id => !document.querySelector(`[data-testid=dlq-row][data-id='${{id}}']`))",
            json!(dead.iter().map(|(id, _)| id).collect::<Vec<_>>())
        ),
    )
    .await?;
    // Redriven malformed orders fail again: once settled, the panel counts
    // what Redis holds.
    settle(redis);
    let length = redis.range(DLQ).len();
    page.wait_js(
        &format!("the dead-letter count showing XLEN {length}"),
        &format!(
            "return document.querySelector('[data-testid=dlq-length]').textContent === '{length}'"
        ),
    )
    .await?;
    page.shot("05-redriven").await;
    Ok(())
}

/// Whether every group of the stream has delivered `id`.
fn delivered_past(redis: &RedisServer, id: &str) -> bool {
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(STREAM)
        .query(&mut redis.conn())
        .expect("XINFO GROUPS");
    groups.into_iter().all(|g| {
        let info: std::collections::HashMap<String, redis::Value> =
            redis::from_redis_value(g).expect("a group's info");
        let last: String = info
            .get("last-delivered-id")
            .and_then(|v| redis::from_redis_value(v.clone()).ok())
            .unwrap_or_default();
        id_key(&last) >= id_key(id)
    })
}

/// A stream id as numbers, to order ids ("…-10" comes after "…-9").
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// A file that is no WebAssembly component, uploaded for a pipeline, is
/// refused with the reason; the log of swaps says so and the old version
/// keeps serving.
async fn refused_upload(page: &Page) -> Result<(), String> {
    let pipeline = page
        .js("const r = document.querySelector('[data-testid=plugin-row]'); return r && r.dataset.pipeline")
        .await
        .as_str()
        .map(str::to_owned)
        .ok_or("no plugin row")?;
    let identity = page
        .text(&format!(
            "[data-testid=plugin-row][data-pipeline='{pipeline}'] [data-field=identity]"
        ))
        .await;
    let file = tempfile::Builder::new()
        .suffix(".wasm")
        .tempfile()
        .map_err(|e| e.to_string())?;
    std::fs::write(file.path(), b"not a component").map_err(|e| e.to_string())?;
    let row = format!("[data-testid=plugin-row][data-pipeline='{pipeline}']");
    page.find(&format!("{row} [data-testid=plugin-file]"))
        .await?
        .send_keys(&file.path().display().to_string())
        .await
        .map_err(|e| format!("choosing the file: {e}"))?;
    page.act(&format!("{row} [data-testid=plugin-upload]"))
        .await?;
    page.wait_refusal("422").await?;
    page.wait_js(
        "the refusal in the plugin log",
        &format!(
            "return !!document.querySelector(\"[data-testid=plugin-log-row][data-outcome=refused][data-pipeline='{pipeline}']\")"
        ),
    )
    .await?;
    let now = page.text(&format!("{row} [data-field=identity]")).await;
    if now != identity {
        return Err(format!(
            "{pipeline} serves {now} after a refused upload, not {identity}"
        ));
    }
    Ok(())
}

/// A tab without the token (sessionStorage is per tab) asks for it, keeps
/// every action disabled until it is given, and lists the dead letters
/// without their entries' fields.
async fn read_only_without_token(page: &Page, addr: &str) -> Result<(), String> {
    let main = page.client.window().await.map_err(|e| e.to_string())?;
    let tab = page
        .client
        .new_window(true)
        .await
        .map_err(|e| e.to_string())?;
    page.client
        .switch_to_window(tab.handle)
        .await
        .map_err(|e| e.to_string())?;
    page.client
        .goto(&format!("http://{addr}/"))
        .await
        .map_err(|e| e.to_string())?;
    page.wait_js(
        "a token field and disabled actions without the token",
        "return !document.getElementById('token-form').hidden \
         && document.getElementById('produce-btn').disabled \
         && document.querySelector('[data-testid=crash-btn]')?.disabled === true",
    )
    .await?;
    page.wait_js(
        "the dead letters listed without their entries' fields",
        "return document.querySelectorAll('[data-testid=dlq-row]').length > 0 \
         && !document.querySelector('[data-testid=dlq-fields-note]').hidden \
         && [...document.querySelectorAll('[data-testid=dlq-row] td[data-field=reason]')] \
              .every((td) => td.title.includes('need the admin token') && !td.title.includes('type='))",
    )
    .await?;
    page.shot("06-no-token").await;
    page.client
        .close_window()
        .await
        .map_err(|e| e.to_string())?;
    page.client
        .switch_to_window(main)
        .await
        .map_err(|e| e.to_string())
}

/// Waits until every group has delivered the stream's newest entry and
/// nothing is pending: what the page shows next is final.
fn settle(redis: &RedisServer) {
    eventually(WAIT, "every group delivered and acked all", || {
        let last = redis.range(STREAM).pop().map(|(id, _)| id);
        let done = last.is_none_or(|id| delivered_past(redis, &id))
            && ["notifications", "analytics"]
                .iter()
                .all(|g| redis.pending(STREAM, g) == 0);
        done.then_some(())
    });
}

/// Where chromedriver and chromium are.
struct Browser {
    driver: PathBuf,
    chromium: PathBuf,
}

impl Browser {
    /// Both programs, or `None` (skipped) when missing and
    /// `STREAMHOST_SKIP_BROWSER=1` outside CI; missing otherwise fails the
    /// test.
    fn find() -> Option<Self> {
        let driver = on_path(&["chromedriver"]);
        let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"]);
        match (driver, chromium) {
            (Some(driver), Some(chromium)) => Some(Self { driver, chromium }),
            // Under CI a skip would pass unseen: there it fails.
            _ if std::env::var("STREAMHOST_SKIP_BROWSER").as_deref() == Ok("1")
                && std::env::var_os("CI").is_none() =>
            {
                eprintln!(
                    "skipped: no chromedriver/chromium on PATH and STREAMHOST_SKIP_BROWSER=1"
                );
                None
            }
            _ => panic!(
                "the dashboard's browser test needs chromium and chromedriver on PATH: \
                 `apt-get install chromium chromium-driver` (or set STREAMHOST_SKIP_BROWSER=1 to skip it)"
            ),
        }
    }
}

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// A chromedriver on a free port; killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start(browser: &Browser) -> Self {
        let port = free_port();
        let log = screenshots().join("chromedriver.log");
        let child = Command::new(&browser.driver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let driver = Self { child, port };
        // Listening is enough: the session request waits for it to be ready.
        // (Its HTTP answers keep the connection open, which `get` cannot read.)
        eventually(Duration::from_secs(30), "chromedriver listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser session, with the few moves the test makes.
struct Page {
    client: Client,
}

impl Page {
    async fn open(driver: &Driver, browser: &Browser) -> Self {
        let caps = json!({
            "goog:chromeOptions": {
                "binary": browser.chromium,
                // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1366,900"],
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a WebDriver session with headless chromium");
        // The screenshots are of the viewport: 1366x900 of page, whatever
        // the window's own frame takes.
        client
            .set_window_size(1366, 900)
            .await
            .expect("sizing the window");
        let frame = client
            .execute("return window.outerHeight - window.innerHeight", Vec::new())
            .await
            .ok()
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        client
            .set_window_size(1366, 900 + frame as u32)
            .await
            .expect("sizing the window");
        Self { client }
    }

    /// Runs `script` (a function body) in the page and returns its value.
    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or(Value::Null)
    }

    /// Polls `script` until it returns something other than null/false.
    async fn wait_js(&self, what: &str, script: &str) -> Result<Value, String> {
        let start = Instant::now();
        loop {
            let v = self.js(script).await;
            if !matches!(v, Value::Null | Value::Bool(false)) {
                return Ok(v);
            }
            if start.elapsed() > WAIT {
                self.shot("timeout").await;
                let toast = self.toast().await;
                return Err(format!(
                    "timed out after {WAIT:?} waiting for: {what} (last toast: {toast:?}; screenshot target/screenshots/timeout.png)"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An element's text content.
    async fn text(&self, css: &str) -> String {
        self.js(&format!(
            "return document.querySelector(\"{css}\")?.textContent ?? ''"
        ))
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// The status line's text (read from the DOM: it fades out).
    async fn toast(&self) -> String {
        self.js("return document.querySelector('[data-testid=toast]').textContent")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits for the status line to report `needle`; an error shown
    /// instead ends the wait at once.
    async fn wait_toast(&self, needle: &str) -> Result<(), String> {
        self.wait_status(needle, false).await
    }

    /// Waits for the status line to report a refusal containing `needle`.
    async fn wait_refusal(&self, needle: &str) -> Result<(), String> {
        self.wait_status(needle, true).await
    }

    async fn wait_status(&self, needle: &str, refused: bool) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let text = self.toast().await;
            let failed = text.contains("failed:");
            if text.contains(needle) && failed == refused {
                return Ok(());
            }
            if (failed && !refused) || start.elapsed() > WAIT {
                self.shot("toast").await;
                return Err(format!(
                    "expected the status line to say {needle:?}, it says {text:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn find(&self, css: &str) -> Result<fantoccini::elements::Element, String> {
        self.client
            .find(Locator::Css(css))
            .await
            .map_err(|e| format!("no element {css}: {e}"))
    }

    /// Clicks like a person does (WebDriver refuses a hidden or covered element).
    async fn click(&self, css: &str) -> Result<(), String> {
        self.find(css)
            .await?
            .click()
            .await
            .map_err(|e| format!("clicking {css}: {e}"))
    }

    /// Clicks an action's button, the status line emptied first so that
    /// [`Page::wait_toast`] reads this action's answer, not the last one's.
    async fn act(&self, css: &str) -> Result<(), String> {
        self.js("document.querySelector('[data-testid=toast]').textContent = ''")
            .await;
        self.click(css).await
    }

    /// Clears a field and types `text` into it.
    async fn fill(&self, css: &str, text: &str) -> Result<(), String> {
        let el = self.find(css).await?;
        el.clear()
            .await
            .map_err(|e| format!("clearing {css}: {e}"))?;
        el.send_keys(text)
            .await
            .map_err(|e| format!("typing into {css}: {e}"))
    }

    async fn select(&self, css: &str, value: &str) -> Result<(), String> {
        self.find(css)
            .await?
            .select_by_value(value)
            .await
            .map_err(|e| format!("choosing {value} in {css}: {e}"))
    }

    /// Saves the viewport as `target/screenshots/NAME.png`.
    async fn shot(&self, name: &str) {
        match self.client.screenshot().await {
            Ok(png) => {
                let path = screenshots().join(format!("{name}.png"));
                std::fs::write(&path, png).expect("writing a screenshot");
            }
            Err(e) => eprintln!("no screenshot {name}: {e}"),
        }
    }
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).expect("creating target/screenshots");
    dir
}
