//! The config file: what it accepts, and where it points when it refuses.

use std::path::Path;

use super::{FileError, parse};
use crate::config::{Config, render};

const ORDERS: &str = r#"
[redis]
url = "redis://127.0.0.1:6379"
username = "streamhost"
password-env = "REDIS_PASSWORD"

[defaults]
stream = "demo:events:orders"
claim-idle = "20s"
max-memory = "32MiB"

[defaults.plugin-config]
log = "info"

[[pipeline]]
name = "notifications"
group = "notifications"
plugin = "plugins/dist/notify.wasm"
max-deliveries = 3
handover = true
emit-allow = ["notifications:*"]

[pipeline.plugin-config]
outbox = "${OUTBOX:-notifications:outbox}"
log = "debug"

[[pipeline]]
group = "analytics"
plugin = "plugins/dist/analytics.wasm"
max-memory = 16777216
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "REDIS_PASSWORD" => Some("s3cret".into()),
        "HOME_DIR" => Some("/home/x".into()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Config, FileError> {
    parse(Path::new("streamhost.toml"), text, &env)
}

fn refusal(text: &str) -> FileError {
    load(text).expect_err("the file should be refused")
}

#[test]
fn pipelines_inherit_defaults_and_their_own_keys_win() {
    let c = load(ORDERS).unwrap();
    let [n, a] = &c.pipelines[..] else {
        panic!("two pipelines")
    };
    assert_eq!(
        (n.name.as_str(), a.name.as_str()),
        ("notifications", "analytics")
    );
    assert_eq!(n.stream, "demo:events:orders");
    assert_eq!(a.stream, "demo:events:orders");
    assert_eq!(n.claim_idle.as_secs(), 20);
    assert_eq!(n.max_deliveries, 3);
    assert_eq!(a.max_deliveries, 5, "the flag's default");
    assert!(n.handover && !a.handover);
    assert_eq!(n.max_memory.0, 32 << 20);
    assert_eq!(a.max_memory.0, 16 << 20, "a size may be a number of bytes");
    assert_eq!(n.emit_allow, ["notifications:*"]);
    assert_eq!(n.plugin_config["outbox"], "notifications:outbox");
    assert_eq!(n.plugin_config["log"], "debug", "the pipeline's value wins");
    assert_eq!(a.plugin_config["log"], "info", "tables merge key by key");
    assert_eq!(n.dlq, "demo:events:orders:dlq");
    assert_eq!(n.redis.username.as_deref(), Some("streamhost"));
    assert_eq!(
        n.redis.password.as_ref().map(|p| p.expose()),
        Some("s3cret")
    );
}

#[test]
fn the_effective_configuration_hides_secrets_and_reads_back_the_same() {
    let c = load(ORDERS).unwrap();
    let shown = render(&c);
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(
        shown.contains("password-env = \"REDIS_PASSWORD\""),
        "{shown}"
    );
    let again = load(&shown).unwrap_or_else(|e| panic!("{e}\n{shown}"));
    assert_eq!(again.pipelines, c.pipelines);
}

#[test]
fn refusals_point_at_line_and_column() {
    let cases: &[(&str, &str, (usize, usize), &str)] = &[
        (
            "unknown key",
            "[[pipeline]]\nstream = \"s\"\ngroup = \"g\"\nplugin = \"p\"\nmax-delivery = 3\n",
            (5, 1),
            "unknown key `max-delivery` (did you mean `max-deliveries`?)",
        ),
        (
            "wrong type",
            "[[pipeline]]\nstream = \"s\"\ngroup = \"g\"\nplugin = \"p\"\nbatch = \"10\"\n",
            (5, 9),
            "`batch` must be a whole number, not a string",
        ),
        (
            "bad value",
            "[[pipeline]]\nstream = \"s\"\ngroup = \"g\"\nplugin = \"p\"\nblock = \"soon\"\n",
            (5, 9),
            "invalid value for `block`",
        ),
        (
            "contradiction",
            "[defaults]\nclaim-idle = \"2s\"\n[[pipeline]]\nstream = \"s\"\ngroup = \"g\"\nplugin = \"p\"\n",
            (2, 14),
            "must be below --claim-idle",
        ),
        (
            "same group twice",
            "[defaults]\nstream = \"s\"\nplugin = \"p\"\n[[pipeline]]\ngroup = \"g\"\n[[pipeline]]\nname = \"b\"\ngroup = \"g\"\n",
            (8, 9),
            "already consumes stream \"s\" as group \"g\"",
        ),
        (
            "duplicate name",
            "[defaults]\nstream = \"s\"\nplugin = \"p\"\n[[pipeline]]\ngroup = \"g\"\n[[pipeline]]\nname = \"g\"\ngroup = \"h\"\n",
            (7, 8),
            "the name \"g\" is already taken",
        ),
        (
            "missing stream",
            "[[pipeline]]\ngroup = \"g\"\nplugin = \"p\"\n",
            (1, 1),
            "this pipeline has no `stream`",
        ),
        ("syntax", "[[pipeline]]\nstream = s\n", (2, 10), ""),
        (
            "unset variable",
            "[[pipeline]]\nstream = \"${NOPE}\"\ngroup = \"g\"\nplugin = \"p\"\n",
            (2, 10),
            "environment variable NOPE is not set",
        ),
        (
            "inline password",
            "[redis]\npassword = \"hunter2\"\n[[pipeline]]\nstream = \"s\"\ngroup = \"g\"\nplugin = \"p\"\n",
            (2, 1),
            "a password is never written in the config file",
        ),
        (
            "single bracket",
            "[pipeline]\nstream = \"s\"\n",
            (1, 2),
            "[[pipeline]] table (double brackets)",
        ),
        (
            "redis inside a pipeline",
            "[[pipeline]]\nstream = \"s\"\ngroup = \"g\"\nplugin = \"p\"\nredis = \"redis://x\"\n",
            (5, 1),
            "the connection is set in the [redis] table",
        ),
        (
            "no pipeline",
            "[redis]\nurl = \"redis://x\"\n",
            (1, 1),
            "no pipeline is declared",
        ),
        (
            "a connection flag inside a pipeline",
            "[[pipeline]]\nstream = \"s\"\ngroup = \"g\"\nplugin = \"p\"\nredis-ca = \"ca.pem\"\n",
            (5, 1),
            "`redis-ca` cannot be set here: the connection is set in the [redis] table",
        ),
        (
            "a CA file that is not there",
            "[redis]\nurl = \"rediss://db:6380\"\n[redis.tls]\nserver-name = \"db\"\nca = \"/nonexistent/ca.pem\"\n[[pipeline]]\nstream = \"s\"\ngroup = \"g\"\nplugin = \"p\"\n",
            (5, 6),
            "cannot read the Redis CA certificate file /nonexistent/ca.pem",
        ),
        (
            "TLS settings on a plaintext URL",
            "[redis]\nurl = \"redis://db:6379\"\n[redis.tls]\nserver-name = \"db\"\n[[pipeline]]\nstream = \"s\"\ngroup = \"g\"\nplugin = \"p\"\n",
            (2, 7),
            "need a rediss:// URL",
        ),
    ];
    for (what, text, (line, column), message) in cases {
        let e = refusal(text);
        assert_eq!((e.line, e.column), (*line, *column), "{what}: {e}");
        assert!(e.message.contains(message), "{what}: {e}");
        assert!(
            e.to_string()
                .starts_with(&format!("streamhost.toml:{line}:{column}: ")),
            "{what}: {e}"
        );
    }
}

#[test]
fn variables_expand_inside_strings_only() {
    let c = load(
        "[[pipeline]]\nstream = \"s\"\ngroup = \"g\"\nplugin = \"${HOME_DIR}/p.wasm\"\n[pipeline.plugin-config]\nprice = \"$$5 ${MISSING:-each}\"\n",
    )
    .unwrap();
    let p = &c.pipelines[0];
    assert_eq!(p.plugin.to_str(), Some("/home/x/p.wasm"));
    assert_eq!(p.plugin_config["price"], "$5 each");
}

#[test]
fn every_run_flag_is_a_key() {
    let command = super::run_command();
    let shown = render(&load(ORDERS).unwrap());
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if super::reserved(long).is_some() || arg.is_hide_set() || long == "help" {
            continue;
        }
        // Keys the effective configuration spells another way, or shows
        // only when set.
        if matches!(
            long,
            "cache-dir"
                | "no-cache"
                | "dlq-maxlen"
                | "maxlen"
                | "max-age"
                | "plugin-config"
                | "order-by"
                | "partitions"
                | "assign"
                | "lease-ttl"
                | "cross-slot-emits"
                | "dedup-window"
                | "commit-wait"
        ) {
            continue;
        }
        assert!(
            shown.contains(&format!("\n{long} = ")),
            "--{long} is missing from the effective configuration"
        );
    }
}

#[test]
fn the_http_listener_is_a_process_level_table() {
    const P: &str = "[[pipeline]]\nstream = \"s\"\ngroup = \"g\"\nplugin = \"p\"\n";
    let c = load(&format!("[http]\nlisten = \"9090\"\n{P}")).unwrap();
    let listen = c.http.as_ref().map(ToString::to_string);
    assert_eq!(listen.as_deref(), Some("127.0.0.1:9090"));
    let again = load(&render(&c)).unwrap();
    assert_eq!(again.http, c.http, "the effective file keeps the listener");
    assert_eq!(load(P).unwrap().http, None);
    let e = refusal(&format!("[http]\nlisten = \"nowhere:port\"\n{P}"));
    assert_eq!((e.line, e.column), (2, 10), "{e}");
    assert!(e.message.contains("invalid `listen`"), "{e}");
    let e = refusal(&format!("[http]\nport = 1\n{P}"));
    assert!(e.message.contains("unknown key `port` in [http]"), "{e}");
    let e = refusal(&format!("{P}http = \"9090\"\n"));
    assert!(e.message.contains("[http] table"), "{e}");
}

#[test]
fn the_effective_http_table_keeps_admin_and_never_the_token() {
    const P: &str = "[[pipeline]]\nstream = \"s\"\ngroup = \"g\"\nplugin = \"p\"\n";
    let with_token = |name: &str| match name {
        crate::config::TOKEN_ENV => Some("tok-hunter2".to_owned()),
        _ => None,
    };
    let path = Path::new("streamhost.toml");
    for admin in [true, false] {
        let text = format!("[http]\nlisten = \"9090\"\nadmin = {admin}\n{P}");
        let c = parse(path, &text, &with_token).unwrap();
        let shown = render(&c);
        assert!(shown.contains(&format!("admin = {admin}")), "{shown}");
        assert!(!shown.contains("tok-hunter2"), "{shown}");
        let again = parse(path, &shown, &with_token).unwrap_or_else(|e| panic!("{e}\n{shown}"));
        assert_eq!(again.http, c.http, "{shown}");
        assert_eq!(
            again.dashboard.admin.is_some(),
            admin,
            "the effective file keeps admin = {admin}: {shown}"
        );
    }
}

/// Where a refusal points, what it says, and the secret that must not show.
struct SecretCase {
    what: &'static str,
    text: String,
    at: (usize, usize),
    says: &'static str,
    secret: &'static str,
}

fn secret_cases() -> Vec<SecretCase> {
    const P: &str = "[[pipeline]]\nstream = \"s\"\ngroup = \"g\"\nplugin = \"p\"\n";
    let case = |what, text: String, at, says, secret| SecretCase {
        what,
        text,
        at,
        says,
        secret,
    };
    vec![
        case(
            "a password in a URL with a bad port",
            format!("[redis]\nurl = \"redis://app:hunter2@db:notaport\"\n{P}"),
            (2, 7),
            "is not a Redis URL",
            "hunter2",
        ),
        case(
            "a password in a URL with a bad variable",
            format!("[redis]\nurl = \"redis://app:hunter2@${{HOST\"\n{P}"),
            (2, 7),
            "unclosed ${",
            "hunter2",
        ),
        case(
            "a password in a URL that came from a variable",
            format!("[redis]\nurl = \"${{BAD_URL}}\"\n{P}"),
            (2, 7),
            "is not a Redis URL",
            "pa55word",
        ),
        case(
            "an inline password",
            format!("[redis]\npassword = \"hunter2\"\n{P}"),
            (2, 1),
            "a password is never written in the config file",
            "hunter2",
        ),
        case(
            "a password where the variable's name belongs",
            format!("[redis]\npassword-env = \"hunter2\"\n{P}"),
            (2, 16),
            "(the Redis password) is not set",
            "hunter2",
        ),
        case(
            "a secret-named key of the wrong type",
            format!("{P}[pipeline.plugin-config]\napi-token = [\"hunter2\"]\n"),
            (6, 13),
            "plugin-config values are strings, numbers or booleans, not an array",
            "hunter2",
        ),
        case(
            "a secret-named unknown key",
            format!("{P}client-secret = \"hunter2\"\n"),
            (5, 1),
            "unknown key `client-secret`",
            "hunter2",
        ),
        case(
            "a secret in an inline table",
            format!("{P}plugin-config = {{ user = \"u\", token = \"hunter2\", n = [1] }}\n"),
            (5, 54),
            "not an array",
            "hunter2",
        ),
        case(
            "a syntax error on a secret's line",
            format!("{P}[pipeline.plugin-config]\npassword = \"hunter2\n"),
            (6, 20),
            "",
            "hunter2",
        ),
        case(
            "a syntax error after a password in a URL",
            format!("[redis]\nurl = \"redis://app:hunter2@db\" x\n{P}"),
            (2, 32),
            "",
            "hunter2",
        ),
    ]
}

#[test]
fn refusals_point_at_a_secrets_line_without_showing_the_secret() {
    let env = |name: &str| match name {
        "BAD_URL" => Some("redis://app:pa55word@db:notaport".to_owned()),
        _ => None,
    };
    let mut wrong = Vec::new();
    for SecretCase {
        what,
        text,
        at,
        says,
        secret,
    } in secret_cases()
    {
        let e = parse(Path::new("streamhost.toml"), &text, &env).expect_err(what);
        let shown = e.to_string();
        let checks = [
            ((e.line, e.column) == at, "points elsewhere"),
            (e.message.contains(says), "says something else"),
            (
                shown.starts_with(&format!("streamhost.toml:{}:{}: ", at.0, at.1)),
                "does not start with the place",
            ),
            (
                !shown.contains(secret) && !e.one_line().contains(secret),
                "shows the secret",
            ),
            (
                shown.contains(&format!("\n{} | ", at.0)) && shown.contains('^'),
                "does not show the line",
            ),
        ];
        for (ok, problem) in checks {
            if !ok {
                wrong.push(format!("{what}: {problem}:\n{shown}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn allowed_hosts_are_names_of_the_http_table() {
    const P: &str = "[[pipeline]]\nstream = \"s\"\ngroup = \"g\"\nplugin = \"p\"\n";
    let c = load(&format!(
        "[http]\nlisten = \"9090\"\nallowed-hosts = [\"Dash.Example.com\", \"ops.internal.\"]\n{P}"
    ))
    .unwrap();
    assert_eq!(
        c.dashboard.allowed_hosts,
        ["dash.example.com", "ops.internal"]
    );
    let again = load(&render(&c)).unwrap();
    assert_eq!(again.dashboard.allowed_hosts, c.dashboard.allowed_hosts);
    let e = refusal(&format!(
        "[http]\nlisten = \"9090\"\nallowed-hosts = [\"ok.example\", \"evil:80\"]\n{P}"
    ));
    assert_eq!((e.line, e.column), (3, 32), "{e}");
    assert!(e.message.contains("not a host name"), "{e}");
    let e = refusal(&format!("[http]\nallowed-hosts = [\"a.example\"]\n{P}"));
    assert!(e.message.contains("needs `listen`"), "{e}");
    let e = refusal(&format!("{P}http-allowed-host = [\"a.example\"]\n"));
    assert!(e.message.contains("allowed-hosts"), "{e}");
}

#[test]
fn a_partitioned_pipeline_shows_its_partitions_and_refuses_its_own_dlq() {
    const P: &str =
        "[[pipeline]]\nstream = \"orders\"\ngroup = \"g\"\nplugin = \"p\"\npartitions = 8\n";
    let c = load(P).unwrap();
    let parts = c.pipelines[0].partitions.expect("partitioned");
    assert_eq!(parts.count, 8);
    assert_eq!(
        parts.assign,
        crate::config::Assign::Lease,
        "lease by default"
    );
    let shown = render(&c);
    for line in [
        "partitions = 8",
        "assign = \"lease\"",
        "lease-ttl = \"10s\"",
        "dlq = \"{orders:i}:dlq\"",
    ] {
        assert!(shown.contains(line), "{line} in:\n{shown}");
    }
    let shared = load(&format!("{P}assign = \"shared\"\n")).unwrap();
    assert_eq!(
        shared.pipelines[0].partitions.map(|p| p.assign),
        Some(crate::config::Assign::Shared)
    );
    let e = refusal(&format!("{P}dlq = \"dead\"\n"));
    assert!(
        e.message
            .contains("--dlq cannot be combined with --partitions"),
        "{e}"
    );
    let e =
        refusal("[[pipeline]]\nstream = \"a{b}\"\ngroup = \"g\"\nplugin = \"p\"\npartitions = 2\n");
    assert!(e.message.contains("braces"), "{e}");
}
