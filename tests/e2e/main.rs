//! End-to-end tests: the real `host` binary, real `redis-server` processes
//! and real plugins built from `plugins/`.

mod support;

mod lifecycle;
mod outcomes;
mod recovery;
mod refusal;
mod sandbox;
