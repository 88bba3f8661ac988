//! streamhost: a Redis Streams consumer-group runtime that hands every entry
//! to a sandboxed WebAssembly handler, whose answer alone decides ack, retry
//! or dead-letter.
//!
//! The binary (`host`) is a thin shell over [`runtime::run`]; tests drive the
//! same entry point.

pub mod cli;
pub mod config;
pub mod demo;
pub mod fault;
pub mod http;
pub mod ops;
pub mod plugin;
pub mod runtime;
pub mod shutdown;
pub mod stream;
pub mod telemetry;
pub mod vocab;

pub use config::{Config, RunConfig};
pub use runtime::{RunError, RunReport, run};
