//! `rediss://` against redis-servers that speak only TLS on their port, with
//! certificates made at run time: every connection of a pipeline over TLS,
//! client certificates, a server name other than the URL's host, refusals
//! of certificates nobody vouches for, the config file's `[redis.tls]`,
//! unusable TLS files refused at start-up, and credentials that never show.
//!
//! The servers' plaintext port is off, so a host that worked at all spoke
//! TLS on every connection; the tests read Redis through its Unix socket.

use std::path::Path;
use std::time::Duration;

use crate::config_file::emitting;
use crate::support::{
    ClientCerts, Host, Pki, RedisServer, eventually, fast, fields_map, meta, plugin,
};

const WAIT: Duration = Duration::from_secs(60);

fn arg(path: &Path) -> String {
    path.display().to_string()
}

/// Whether `group` exists on `stream`: a host that never got through
/// never created it.
fn group_exists(redis: &RedisServer, stream: &str, group: &str) -> bool {
    redis.entries_read(stream, group).is_some()
}

/// Waits for `host` to report that it cannot connect, with `hint` in the
/// report; then checks that it read nothing (no group, every entry still
/// there) and that it stops cleanly.
fn refused(redis: &RedisServer, mut host: Host, stream: &str, entries: usize, hint: &str) {
    host.wait_for_log("redis connection lost", WAIT);
    host.wait_for_log(hint, WAIT);
    assert!(
        !group_exists(redis, stream, "g"),
        "the host got through:\n{}",
        host.log()
    );
    assert_eq!(redis.range(stream).len(), entries, "nothing was lost");
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait_exit(WAIT).code(), Some(0), "{}", host.log());
}

/// An ACL user `app` with `password`, allowed everything.
fn app_user(redis: &RedisServer, password: &str) {
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "app",
            "on",
            &format!(">{password}"),
            "~*",
            "&*",
            "+@all",
        ])
        .query(&mut redis.conn())
        .expect("ACL SETUSER");
}

fn add_emits(redis: &RedisServer, stream: &str, out: &str, n: usize) {
    for _ in 0..n {
        redis.add(stream, &[("action", "emit"), ("emit_to", out)]);
    }
}

#[test]
fn every_connection_of_a_pipeline_speaks_tls() {
    let pki = Pki::new("streamhost test CA");
    let server = pki.server("server", &["localhost", "127.0.0.1"]);
    let redis = RedisServer::start_tls(&pki, &server, ClientCerts::No);
    let (stream, out) = ("orders", "tls:out");
    // Pending on a consumer that died (the reaper must claim and fetch it)
    // and on our own name from a previous run (start-up recovery).
    add_emits(&redis, stream, out, 1);
    redis.read_as(stream, "g", "dead-peer", 1);
    add_emits(&redis, stream, out, 1);
    redis.read_as(stream, "g", "c1", 1);
    redis.add(stream, &[("action", "permanent")]);
    // Fails its first delivery: released after the backoff, claimed again.
    redis.add(stream, &[("action", "fail-until"), ("n", "2")]);
    // Over --max-fields: withheld by the fast reader as it streams past.
    let wide: Vec<(String, String)> = (0..10).map(|i| (format!("f{i}"), "x".into())).collect();
    let wide: Vec<(&str, &str)> = wide.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    redis.add(stream, &wide);
    add_emits(&redis, stream, out, 20);

    let ca = arg(&pki.ca());
    let extra = ["--redis-ca", &ca, "--consumer", "c1", "--max-fields", "8"];
    let mut host = Host::misbehave(&redis, stream, &fast(&extra));
    eventually(WAIT, "every entry settled", || {
        (redis.entries_read(stream, "g") == Some(25) && redis.pending(stream, "g") == 0)
            .then_some(())
    });
    let dead = redis.range_raw(&format!("{stream}:dlq"));
    let mut kinds: Vec<String> = dead.iter().map(|(_, r)| meta(r, "kind").into()).collect();
    kinds.sort();
    assert_eq!(kinds, ["invalid", "permanent"], "{dead:?}");
    let emitted = redis.range(out);
    assert_eq!(emitted.len(), 22, "every emitting entry emitted once");
    let redelivered = emitted
        .iter()
        .filter(|(_, f)| fields_map(f)["delivery"] == "2")
        .count();
    assert_eq!(
        redelivered, 2,
        "the dead peer's entry was reclaimed and our own recovered"
    );
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait_exit(WAIT).code(), Some(0), "{}", host.log());
    assert!(
        !redis.consumers(stream, "g").contains(&"c1".to_owned()),
        "the consumer was deleted at shutdown"
    );
}

#[test]
fn a_server_that_requires_client_certificates() {
    let pki = Pki::new("streamhost test CA");
    let server = pki.server("server", &["127.0.0.1"]);
    let redis = RedisServer::start_tls(&pki, &server, ClientCerts::Required);
    let stream = "orders";
    add_emits(&redis, stream, "tls:out", 5);
    let ca = arg(&pki.ca());

    let without = Host::misbehave(&redis, stream, &["--redis-ca", &ca]);
    refused(
        &redis,
        without,
        stream,
        5,
        "check the client certificate and key",
    );

    let client = pki.client("client");
    let (cert, key) = (arg(&client.cert), arg(&client.key));
    let extra = [
        "--redis-ca",
        &ca,
        "--redis-cert",
        &cert,
        "--redis-key",
        &key,
    ];
    let _with = Host::misbehave(&redis, stream, &extra);
    redis.wait_for_len("tls:out", 5);
    redis.wait_until_settled(stream, "g", WAIT);
    assert_eq!(redis.entries_read(stream, "g"), Some(5));
}

#[test]
fn the_certificate_may_name_another_host_than_the_url() {
    let pki = Pki::new("streamhost test CA");
    let server = pki.server("server", &["redis.test"]);
    let redis = RedisServer::start_tls(&pki, &server, ClientCerts::No);
    let stream = "orders";
    add_emits(&redis, stream, "tls:out", 5);
    redis.add(stream, &[("action", "permanent")]);
    let ca = arg(&pki.ca());

    // The URL's host is 127.0.0.1, which the certificate does not name.
    let unnamed = Host::misbehave(&redis, stream, &["--redis-ca", &ca]);
    refused(
        &redis,
        unnamed,
        stream,
        6,
        "not issued for the name connected to",
    );

    let extra = ["--redis-ca", &ca, "--redis-server-name", "redis.test"];
    let _named = Host::misbehave(&redis, stream, &extra);
    redis.wait_for_len("tls:out", 5);
    redis.wait_for_len("orders:dlq", 1);
    redis.wait_until_settled(stream, "g", WAIT);
}

#[test]
fn certificates_nobody_vouches_for_are_refused() {
    let pki = Pki::new("streamhost test CA");
    let server = pki.server("server", &["127.0.0.1"]);
    let redis = RedisServer::start_tls(&pki, &server, ClientCerts::No);
    let stream = "orders";
    add_emits(&redis, stream, "tls:out", 3);

    let other = Pki::new("another CA");
    let wrong_ca = arg(&other.ca());
    let host = Host::misbehave(&redis, stream, &["--redis-ca", &wrong_ca]);
    refused(&redis, host, stream, 3, "not signed by a trusted CA");
    // Without a CA file the system's roots decide, and they do not know
    // the test CA either.
    let host = Host::misbehave(&redis, stream, &[]);
    refused(&redis, host, stream, 3, "not signed by a trusted CA");
}

#[test]
fn a_config_file_sets_tls_in_its_redis_table() {
    const SECRET: &str = "c0nfig-file-s3cret";
    let pki = Pki::new("streamhost test CA");
    let server = pki.server("server", &["redis.test"]);
    let redis = RedisServer::start_tls(&pki, &server, ClientCerts::Required);
    app_user(&redis, SECRET);
    let client = pki.client("client");
    let password = pki.dir().join("password");
    std::fs::write(&password, format!("{SECRET}\n")).unwrap();
    let stream = "orders";
    add_emits(&redis, stream, "tls:out", 4);
    redis.add(stream, &[("action", "permanent")]);

    let file = pki.dir().join("streamhost.toml");
    let text = format!(
        "[redis]\nurl = \"{url}\"\nusername = \"app\"\npassword-file = \"{password}\"\n\n\
         [redis.tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\nserver-name = \"redis.test\"\n\n{pipeline}",
        url = redis.url(),
        password = password.display(),
        ca = pki.ca().display(),
        cert = client.cert.display(),
        key = client.key.display(),
        pipeline = emitting("g", stream, "tls:out", ""),
    );
    std::fs::write(&file, text).unwrap();

    let (status, shown, err) = Host::output_env(
        &["config".as_ref(), "check".as_ref(), file.as_os_str()],
        &[],
    );
    assert!(status.success(), "{err}");
    assert!(
        shown.contains("[redis.tls]") && shown.contains("server-name = \"redis.test\""),
        "{shown}"
    );
    assert!(
        !shown.contains(SECRET) && !err.contains(SECRET),
        "{shown}{err}"
    );

    let mut host = Host::spawn(&["run".as_ref(), "--config".as_ref(), file.as_os_str()]);
    redis.wait_for_len("tls:out", 4);
    redis.wait_for_len("orders:dlq", 1);
    redis.wait_until_settled(stream, "g", WAIT);
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait_exit(WAIT).code(), Some(0), "{}", host.log());
    assert!(!host.log().contains(SECRET), "{}", host.log());
}

#[test]
fn unusable_tls_settings_are_refused_at_start_up() {
    let pki = Pki::new("streamhost test CA");
    let client = pki.client("client");
    let dir = pki.dir();
    let garbled = dir.join("garbled.pem");
    std::fs::write(
        &garbled,
        "-----BEGIN CERTIFICATE-----\n%%% not base64 %%%\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let missing = dir.join("missing.pem");
    let other = Pki::new("another CA");
    let stranger = other.client("stranger");
    let plugin = arg(&plugin("misbehave"));
    let run = |url: &str, tls: &[&str]| {
        let mut args = vec!["run", "--redis", url, "--stream", "s", "--group", "g"];
        args.extend(["--plugin", &plugin]);
        args.extend(tls);
        Host::output_env(&args, &[])
    };
    // Nothing listens on port 1: a refusal must come before connecting.
    let url = "rediss://127.0.0.1:1";
    let (ca, cert) = (arg(&pki.ca()), arg(&client.cert));
    let (garbled, missing, wrong_key) = (arg(&garbled), arg(&missing), arg(&stranger.key));
    let cases: [(&str, Vec<&str>, &str, &str); 5] = [
        (
            url,
            vec!["--redis-ca", &missing],
            "cannot read the Redis CA certificate file",
            &missing,
        ),
        (
            url,
            vec!["--redis-ca", &garbled],
            "is not valid PEM",
            &garbled,
        ),
        (
            url,
            vec![
                "--redis-ca",
                &ca,
                "--redis-cert",
                &cert,
                "--redis-key",
                &wrong_key,
            ],
            "cannot be used together",
            &wrong_key,
        ),
        (
            url,
            vec!["--redis-ca", &ca, "--redis-cert", &cert],
            "key file is missing",
            "",
        ),
        (
            "redis://127.0.0.1:1",
            vec!["--redis-ca", &ca],
            "need a rediss:// URL",
            "",
        ),
    ];
    for (url, tls, says, names) in cases {
        let (status, _, err) = run(url, &tls);
        assert_eq!(status.code(), Some(64), "{tls:?}: {err}");
        assert!(err.contains(says) && err.contains(names), "{tls:?}: {err}");
    }

    // The same from a config file: file, line and column of the key.
    let file = dir.join("streamhost.toml");
    let text = format!(
        "[redis]\nurl = \"{url}\"\n[redis.tls]\nca = \"{missing}\"\n\n{}",
        emitting("g", "s", "out", "")
    );
    std::fs::write(&file, text).unwrap();
    let (status, _, err) = Host::output_env(
        &["config".as_ref(), "check".as_ref(), file.as_os_str()],
        &[],
    );
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(
        err.contains(&format!(
            "{}:4:6: cannot read the Redis CA certificate file {missing}",
            file.display()
        )),
        "{err}"
    );
    // And the connection flags are not pipeline keys beside --config.
    let (status, _, err) = Host::output_env(
        &[
            "run".as_ref(),
            "--config".as_ref(),
            file.as_os_str(),
            "--redis-ca".as_ref(),
            ca.as_ref(),
        ],
        &[],
    );
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(
        err.contains("--redis-ca cannot be combined with --config"),
        "{err}"
    );
}

#[test]
fn credentials_never_show() {
    const SECRET: &str = "S3cret-never-shown";
    const WRONG: &str = "Wr0ng-never-shown";
    let pki = Pki::new("streamhost test CA");
    let server = pki.server("server", &["127.0.0.1"]);
    let redis = RedisServer::start_tls(&pki, &server, ClientCerts::No);
    app_user(&redis, SECRET);
    let port = redis.port();
    let ca = arg(&pki.ca());
    let plugin = arg(&plugin("misbehave"));
    let in_url = format!("rediss://app:{SECRET}@127.0.0.1:{port}");
    let env = [
        ("STREAMHOST_REDIS", in_url.as_str()),
        ("STREAMHOST_REDIS_PASSWORD", SECRET),
    ];
    let leaks = |what: &str, text: &str| {
        assert!(
            !text.contains(SECRET) && !text.contains(WRONG),
            "{what} shows a password:\n{text}"
        );
    };

    // Help, with a password in the URL variable and the password variable.
    let (status, out, err) = Host::output_env(&["run", "--help"], &env);
    assert!(
        status.success() && out.contains("--redis-password-file"),
        "{out}{err}"
    );
    leaks("--help", &format!("{out}{err}"));

    // The effective configuration.
    let check = [
        "run", "--check", "--stream", "s", "--group", "g", "--plugin", &plugin,
    ];
    let (status, out, err) = Host::output_env(&check, &env);
    assert!(status.success(), "{err}");
    assert!(
        out.contains("app:***@127.0.0.1")
            && out.contains("password-env = \"STREAMHOST_REDIS_PASSWORD\""),
        "{out}"
    );
    leaks("--check", &format!("{out}{err}"));

    // A URL that cannot be used is named in the refusal, redacted.
    let bad = format!("rediss://app:{SECRET}@127.0.0.1:port");
    let refusal = [
        "run", "--redis", &bad, "--stream", "s", "--group", "g", "--plugin", &plugin,
    ];
    let (status, out, err) = Host::output_env(&refusal, &[]);
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(err.contains("app:***@127.0.0.1"), "{err}");
    leaks("a refused URL", &format!("{out}{err}"));

    // A wrong password: the connection error names the server, not the password.
    let stream = "orders";
    add_emits(&redis, stream, "tls:out", 3);
    let user = ["--redis-ca", &ca, "--redis-username", "app"];
    let wrong = Host::misbehave_env(
        &redis,
        stream,
        &user,
        &[("STREAMHOST_REDIS_PASSWORD", WRONG)],
    );
    wrong.wait_for_log("redis connection lost", WAIT);
    let log = wrong.log();
    assert!(log.contains(&format!("127.0.0.1:{port}")), "{log}");
    leaks("the log of a refused login", &log);
    refused(&redis, wrong, stream, 3, "redis connection lost");

    // The right one, from a file.
    let file = pki.dir().join("password");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let file = arg(&file);
    let extra = [&user[..], &["--redis-password-file", &file]].concat();
    let mut host = Host::misbehave(&redis, stream, &extra);
    redis.wait_for_len("tls:out", 3);
    redis.wait_until_settled(stream, "g", WAIT);
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait_exit(WAIT).code(), Some(0), "{}", host.log());
    leaks("the log of a run", &host.log());
}
