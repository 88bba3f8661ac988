//! The effective configuration as a config file: every value resolved
//! (defaults, `[defaults]`, `${VAR}`), secrets shown only as where they come
//! from. What `host config check` prints; it parses back to the same
//! configuration.

use std::time::Duration;

use toml::{Table, Value};

use super::{Config, RedisConfig, RunConfig, SecretSource};

/// `config` as TOML text, secrets redacted.
pub fn render(config: &Config) -> String {
    let mut doc = Table::new();
    if let Some(first) = config.pipelines.first() {
        doc.insert("redis".into(), Value::Table(redis_table(&first.redis)));
    }
    if let Some(http) = http_table(config) {
        doc.insert("http".into(), Value::Table(http));
    }
    let pipelines = config
        .pipelines
        .iter()
        .map(|p| Value::Table(pipeline_table(p)))
        .collect();
    doc.insert("pipeline".into(), Value::Array(pipelines));
    toml::to_string(&doc).unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
}

/// `[http]` in full; the admin token is never shown (it is read from
/// `STREAMHOST_HTTP_TOKEN`, not from the file).
fn http_table(config: &Config) -> Option<Table> {
    let listen = config.http.as_ref()?;
    let mut t = Table::new();
    t.insert("listen".into(), listen.to_string().into());
    t.insert("admin".into(), config.dashboard.admin.is_some().into());
    if !config.dashboard.allowed_hosts.is_empty() {
        let names = config.dashboard.allowed_hosts.iter().cloned();
        t.insert(
            "allowed-hosts".into(),
            Value::Array(names.map(Value::from).collect()),
        );
    }
    Some(t)
}

fn redis_table(r: &RedisConfig) -> Table {
    let mut t = Table::new();
    t.insert("url".into(), r.redacted_url().into());
    if let Some(user) = &r.username {
        t.insert("username".into(), user.clone().into());
    }
    if r.cluster {
        t.insert("cluster".into(), true.into());
    }
    if let Some(s) = &r.sentinel {
        let nodes = s.nodes.iter().map(|(h, p)| Value::from(format!("{h}:{p}")));
        t.insert("sentinels".into(), Value::Array(nodes.collect()));
        t.insert("master".into(), s.master.clone().into());
    }
    match r.password.as_ref().map(|p| p.source()) {
        Some(SecretSource::Env(name)) => {
            t.insert("password-env".into(), name.clone().into());
        }
        Some(SecretSource::File(path)) => {
            t.insert("password-file".into(), path.display().to_string().into());
        }
        None => {}
    }
    if let Some(tls) = &r.tls {
        let mut s = Table::new();
        let paths = [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)];
        for (key, path) in paths {
            if let Some(p) = path {
                s.insert(key.into(), p.display().to_string().into());
            }
        }
        if let Some(name) = &tls.server_name {
            s.insert("server-name".into(), name.clone().into());
        }
        t.insert("tls".into(), Value::Table(s));
    }
    t
}

fn pipeline_table(p: &RunConfig) -> Table {
    let mut t = Table::new();
    let mut put = |key: &str, value: Value| {
        t.insert(key.to_owned(), value);
    };
    let int = |n: u64| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    let dur = |d: Duration| Value::String(humantime::format_duration(d).to_string());
    let size = |s: crate::vocab::units::ByteSize| Value::String(s.to_string());
    put("name", p.name.clone().into());
    put("stream", p.stream.clone().into());
    put("group", p.group.clone().into());
    put("consumer", p.consumer.clone().into());
    put("plugin", p.plugin.display().to_string().into());
    put("concurrency", int(p.concurrency as u64));
    put("batch", int(p.batch as u64));
    put("max-in-flight", int(p.max_in_flight as u64));
    put("block", dur(p.block));
    put("max-deliveries", int(p.max_deliveries.into()));
    put("claim-idle", dur(p.claim_idle));
    put("claim-interval", dur(p.claim_interval));
    put("handler-timeout", dur(p.handler_timeout));
    put("max-memory", size(p.max_memory));
    put("fresh-instance", p.fresh_instance.into());
    if let Some(field) = &p.order_by {
        put("order-by", field.clone().into());
    }
    put("max-entry-size", size(p.max_entry_size));
    put("max-fields", int(p.max_fields as u64));
    put("max-emits", int(p.max_emits as u64));
    put("max-emit-bytes", size(p.max_emit_bytes));
    put("max-message-size", size(p.max_message_size));
    put("max-log-rate", int(p.max_log_rate.into()));
    put(
        "emit-allow",
        Value::Array(p.emit_allow.iter().cloned().map(Value::from).collect()),
    );
    put("dlq", p.dlq.clone().into());
    if let Some(n) = p.dlq_maxlen {
        put("dlq-maxlen", int(n));
    }
    put("start-id", p.start_id.clone().into());
    put("retry-backoff", dur(p.retry_backoff));
    if let Some(n) = p.maxlen {
        put("maxlen", int(n));
    }
    if let Some(d) = p.max_age {
        put("max-age", dur(d));
    }
    put("trim-interval", dur(p.trim_interval));
    put("handover", p.handover.into());
    put("shutdown-grace", dur(p.shutdown_grace));
    put("watch-interval", dur(p.watch_interval));
    put("no-watch", (!p.watch).into());
    match &p.cache_dir {
        Some(dir) => put("cache-dir", dir.display().to_string().into()),
        None => put("no-cache", true.into()),
    }
    put("stats-interval", dur(p.stats_interval));
    if let Some(w) = &p.commit_wait {
        put("commit-wait", w.to_string().into());
    }
    if p.redis.cluster {
        put("cross-slot-emits", p.cross_slot_emits.as_str().into());
        put("dedup-window", dur(p.dedup_window));
    }
    if let Some(parts) = &p.partitions {
        put("partitions", int(parts.count.into()));
        put("assign", parts.assign.as_str().into());
        put("lease-ttl", dur(parts.lease_ttl));
    }
    let config: Table = p
        .plugin_config
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    put("plugin-config", Value::Table(config));
    t
}

/// The keys whose values differ between two pipelines (`redis` for the connection).
pub fn changed_keys(old: &RunConfig, new: &RunConfig) -> Vec<String> {
    let (a, b) = (pipeline_table(old), pipeline_table(new));
    let mut keys: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(b.keys().filter(|k| !a.contains_key(*k)).cloned())
        .collect();
    if old.redis != new.redis {
        keys.push("redis".into());
    }
    if old.fence != new.fence {
        keys.push("lease".into());
    }
    keys
}
