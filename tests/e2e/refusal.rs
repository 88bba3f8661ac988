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
