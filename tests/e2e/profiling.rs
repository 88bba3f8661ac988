//! `--perf-map`: plugin code named for `perf`, only when asked for.

use std::path::PathBuf;
use std::process::Command;

use crate::support::plugin;

/// Runs `host check` on a plugin with `flags` and `env`; returns the perf map
/// that process left behind, if any (and removes it).
fn perf_map_of_check(flags: &[&str], env: &[(&str, &str)]) -> Option<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(flags)
        .arg("check")
        .arg(plugin("notify"))
        .env_remove("STREAMHOST_PERF_MAP")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("running host check");
    let map = PathBuf::from(format!("/tmp/perf-{}.map", child.id()));
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&map).ok();
    let _ = std::fs::remove_file(&map);
    text
}

#[test]
fn perf_map_names_plugin_functions_only_when_asked_for() {
    assert_eq!(perf_map_of_check(&[], &[]), None, "off by default");
    for (flags, env) in [
        (&["--perf-map"][..], &[][..]),
        (&[], &[("STREAMHOST_PERF_MAP", "true")][..]),
    ] {
        let map = perf_map_of_check(flags, env).expect("a perf map");
        // `<address> <size> <name>` per function, in perf's format; the
        // plugin's own functions are `wasm[<module>]::…` (by their names
        // when the component keeps a name section, else by index).
        let named = map
            .lines()
            .filter(|l| {
                let parts: Vec<&str> = l.splitn(3, ' ').collect();
                parts.len() == 3
                    && parts[0].starts_with("0x")
                    && u64::from_str_radix(parts[1], 16).is_ok()
                    && parts[2].starts_with("wasm[")
            })
            .count();
        assert!(named > 0, "no line names a plugin function:\n{map}");
    }
}
