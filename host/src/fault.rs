//! Fault injection for the tests of supervision and panic handling: debug
//! builds read `STREAMHOST_FAULT` (comma-separated points), release builds
//! compile every point to nothing.

/// Whether `point` is switched on.
#[cfg(debug_assertions)]
pub fn injected(point: &str) -> bool {
    std::env::var("STREAMHOST_FAULT")
        .map(|v| v.split(',').any(|p| p.trim() == point))
        .unwrap_or(false)
}

/// Whether `point` is switched on (never, in release builds).
#[cfg(not(debug_assertions))]
pub fn injected(_point: &str) -> bool {
    false
}

/// Panics the first time it is reached with `point` switched on.
pub fn panic_once(point: &str) {
    static FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if injected(point) && !FIRED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        panic!("injected fault: {point}");
    }
}
