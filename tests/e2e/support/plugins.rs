//! The real plugins from `plugins/`, built once per test run for
//! wasm32-wasip2 (adding the target with rustup if it is missing).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Packages built for the tests, and the component file each produces.
const PACKAGES: &[&str] = &[
    "noop-plugin",
    "notify-plugin",
    "analytics-plugin",
    "misbehave-plugin",
    "fanout-plugin",
    "wrong-world-fixture",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// Directory holding the built `.wasm` files.
pub fn plugin_dir() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build_all)
}

/// Path of a built component, e.g. `plugin("notify")`.
pub fn plugin(name: &str) -> PathBuf {
    let path = plugin_dir().join(format!("{name}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

fn build_all() -> PathBuf {
    let root = workspace_root();
    let target_dir = root.join("target").join("plugins");
    ensure_wasm_target();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "plugin",
            "--target-dir",
        ])
        .arg(&target_dir);
    for p in PACKAGES {
        cmd.args(["-p", p]);
    }
    let status = cmd.status().expect("running cargo to build the plugins");
    assert!(status.success(), "building the plugins failed");
    target_dir.join("wasm32-wasip2").join("plugin")
}

fn ensure_wasm_target() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-wasip2")
        })
        .unwrap_or(false);
    if !installed {
        let status = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .status()
            .expect("running rustup");
        assert!(status.success(), "`rustup target add wasm32-wasip2` failed");
    }
}

/// A plugin written in another language (`plugins/<dir>`), built once per
/// test run by its own `build.sh` into `plugins/dist/<name>.wasm`.
pub fn scripted_plugin(dir: &str, name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let root = workspace_root();
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|d| d == dir) {
        let script = root.join("plugins").join(dir).join("build.sh");
        let status = Command::new("bash")
            .arg(&script)
            .status()
            .expect("running a plugin build script");
        assert!(status.success(), "{} failed", script.display());
        built.push(dir.to_owned());
    }
    root.join("plugins")
        .join("dist")
        .join(format!("{name}.wasm"))
}
