//! Bad input at start-up gets a clear message and a distinct exit status.

use crate::support::{Host, plugin};

fn run_with(plugin_path: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec![
        "run",
        "--stream",
        "s",
        "--group",
        "g",
        "--redis",
        "redis://127.0.0.1:1",
        "--plugin",
    ];
    let p = plugin_path.display().to_string();
    args.push(&p);
    args.extend_from_slice(extra);
    let (status, stderr) = Host::output(&args);
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn a_file_that_is_not_wasm_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.wasm");
    std::fs::write(&path, "definitely not wasm").unwrap();
    let (code, err) = run_with(&path, &[]);
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("notes.wasm is not a WebAssembly file"),
        "{err}"
    );
}

#[test]
fn a_core_module_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core.wasm");
    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    let (code, err) = run_with(&path, &[]);
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("is a core WebAssembly module, not a component"),
        "{err}"
    );
    assert!(err.contains("wasm32-wasip2"), "{err}");
}

#[test]
fn a_truncated_component_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torn.wasm");
    let bytes = std::fs::read(plugin("notify")).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let (code, err) = run_with(&path, &[]);
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("torn.wasm is not a valid WebAssembly component"),
        "{err}"
    );
}

#[test]
fn a_component_of_another_world_is_refused() {
    let (code, err) = run_with(&plugin("wrong-world"), &[]);
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("does not implement the world streamhost:plugin/handler@0.1.0"),
        "{err}"
    );
    assert!(
        err.contains("wasi:cli/run"),
        "the message lists what it does export: {err}"
    );
}

#[test]
fn a_missing_file_is_refused() {
    let (code, err) = run_with(std::path::Path::new("/nonexistent/plugin.wasm"), &[]);
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("cannot read plugin /nonexistent/plugin.wasm"),
        "{err}"
    );
}

#[test]
fn contradictory_flags_are_refused_before_start() {
    let (code, err) = run_with(
        &plugin("noop"),
        &["--handler-timeout", "40s", "--claim-idle", "30s"],
    );
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("--handler-timeout (40s) must be below --claim-idle (30s)"),
        "{err}"
    );
    let (code, err) = run_with(&plugin("noop"), &["--max-memory", "lots"]);
    assert_eq!(code, 2, "clap usage error: {err}");
    assert!(err.contains("invalid size \"lots\""), "{err}");
}

#[test]
fn host_check_describes_a_valid_plugin() {
    let path = plugin("notify");
    let (status, _) = Host::output(&["check".as_ref(), path.as_os_str()]);
    assert!(status.success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ok — implements streamhost:plugin/handler@0.1.0"),
        "{text}"
    );
    assert!(text.contains("identity  notify@"), "{text}");
    assert!(text.contains("exports   handle"), "{text}");
    assert!(text.contains("streamhost:plugin/host@0.1.0"), "{text}");
    let json = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["check", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["name"], "notify");
    assert_eq!(report["version"].as_str().unwrap().len(), 12);
    assert_eq!(
        report["size_bytes"].as_u64().unwrap(),
        std::fs::metadata(&path).unwrap().len()
    );
    assert!(
        report["exports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "handle")
    );
}

#[test]
fn host_check_explains_every_kind_of_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, "hello").unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let torn = dir.path().join("torn.wasm");
    let bytes = std::fs::read(plugin("notify")).unwrap();
    std::fs::write(&torn, &bytes[..bytes.len() / 3]).unwrap();
    let cases = [
        (garbage, "is not a WebAssembly file"),
        (core, "is a core WebAssembly module, not a component"),
        (torn, "is not a valid WebAssembly component"),
        (
            plugin("wrong-world"),
            "does not implement the world streamhost:plugin/handler@0.1.0: no export `handle` found",
        ),
        (dir.path().join("missing.wasm"), "cannot read plugin"),
    ];
    for (path, message) in cases {
        let (status, err) = Host::output(&["check".as_ref(), path.as_os_str()]);
        assert_eq!(status.code(), Some(65), "{}: {err}", path.display());
        assert!(err.contains(message), "{}: {err}", path.display());
    }
}
