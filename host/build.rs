//! Builds the plugins `host demo` runs (`plugins/notify`, `plugins/analytics`)
//! for wasm32-wasip2 and leaves them in OUT_DIR, where `demo::plugins` embeds
//! them: the binary then runs the demo from any directory, without the
//! repository beside it.
//!
//! The plugins are built by a nested `cargo build` of this workspace into
//! `plugins/` under the outer target directory — the directory
//! `plugins/build.sh` and the tests build the plugins in. Not the outer
//! profile's directory itself: the outer cargo holds its lock until this
//! script ends, so sharing it would deadlock. Not a directory under OUT_DIR
//! either: dev, release, test and clippy builds each have their own OUT_DIR,
//! and the guests' dependencies (wit-bindgen and its parser, encoder and
//! macros) take over a minute to build from scratch on two cores, while the
//! guests do not depend on the outer profile at all. The nested cargo also
//! gets an environment cleaned of what the outer cargo set for this build
//! script (flags, wrappers, target, jobserver), which would otherwise leak
//! into a build for another target.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The plugins embedded, by package and by the `.wasm` file each produces.
const PLUGINS: &[(&str, &str)] = &[
    ("notify-plugin", "notify"),
    ("analytics-plugin", "analytics"),
];
const TARGET: &str = "wasm32-wasip2";
/// The workspace profile for guests (small and fast; see the root Cargo.toml).
const PROFILE: &str = "plugin";

/// Variables the outer cargo (or `cargo clippy`, or a coverage tool) sets for
/// this script that change what a nested cargo builds or how: flags meant for
/// the host target, the clippy driver, a forced target or target directory,
/// and the outer jobserver (whose pipe this script may not pass on intact).
const LEAKING: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CLIPPY_ARGS",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_INCREMENTAL",
    "CARGO_LLVM_COV",
    "LLVM_PROFILE_FILE",
];

/// Prefixes of variables cargo sets for this package's build script only.
const LEAKING_PREFIXES: &[&str] = &[
    "CARGO_CFG_",
    "CARGO_FEATURE_",
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "DEP_",
    "__CARGO",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("host/ is inside the workspace");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    for path in [
        "plugins/notify",
        "plugins/analytics",
        "plugins/sdk",
        "wit",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo::rerun-if-changed={}", workspace.join(path).display());
    }

    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    ensure_target(&rustc);

    let target_dir = outer_target_dir(&out_dir).join("plugins");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(&cargo);
    build
        .current_dir(workspace)
        .args([
            "build",
            "--locked",
            "--target",
            TARGET,
            "--profile",
            PROFILE,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    for (package, _) in PLUGINS {
        build.args(["-p", package]);
    }
    clean_env(&mut build);
    let status = build
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run {}: {e}", cargo.display())));
    if !status.success() {
        fail(&format!(
            "building the demo plugins for {TARGET} failed ({status}); the cargo output above says why"
        ));
    }
    let built = target_dir.join(TARGET).join(PROFILE);
    for (_, file) in PLUGINS {
        let from = built.join(format!("{file}.wasm"));
        let to = out_dir.join(format!("{file}.wasm"));
        // A copy, not the build's own file: the next nested build may
        // rewrite that one while rustc reads it for `include_bytes!`.
        std::fs::copy(&from, &to)
            .unwrap_or_else(|e| fail(&format!("cannot copy {}: {e}", from.display())));
    }
}

/// The outer build's target directory: the ancestor of OUT_DIR where cargo
/// keeps its `CACHEDIR.TAG` (OUT_DIR is `<target>/[<triple>/]<profile>/build/
/// <unit>/out`). Failing that, OUT_DIR itself: slower, never wrong.
fn outer_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .skip(1)
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .unwrap_or(out_dir)
        .to_owned()
}

/// Adds the wasm32-wasip2 standard library with rustup when this toolchain
/// lacks it, as `plugins/build.sh` and the tests do.
fn ensure_target(rustc: &OsString) {
    if has_target(rustc) {
        return;
    }
    println!("cargo::warning=adding the {TARGET} target (rustup target add {TARGET})");
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status();
    match added {
        Ok(status) if status.success() && has_target(rustc) => {}
        Ok(status) => fail(&format!(
            "`rustup target add {TARGET}` failed ({status}); the host embeds plugins built for \
             {TARGET}: add the target to this toolchain and build again"
        )),
        Err(e) => fail(&format!(
            "this toolchain has no {TARGET} target and rustup cannot be run to add it ({e}); \
             install the target's standard library for this toolchain (with rustup: \
             `rustup target add {TARGET}`) and build again"
        )),
    }
}

/// Whether the toolchain's sysroot holds the target's standard library
/// (works for toolchains not managed by rustup too).
fn has_target(rustc: &OsString) -> bool {
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib")
        .is_dir()
}

fn clean_env(command: &mut Command) {
    for name in LEAKING {
        command.env_remove(name);
    }
    for (name, _) in env::vars_os() {
        let name = name.to_string_lossy();
        if LEAKING_PREFIXES.iter().any(|p| name.starts_with(p)) {
            command.env_remove(&*name);
        }
    }
}

/// Ends the build script with `message`, which cargo shows with the failure.
fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
