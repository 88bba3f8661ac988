//! End-to-end tests: the real `host` binary, real `redis-server` processes
//! and real plugins built from `plugins/`.

mod support;

mod cache;
mod claims;
mod cluster;
mod config_file;
mod dashboard_admin;
mod dashboard_api;
mod dashboard_browser;
mod demo;
mod dlq_moves;
mod dlq_records;
mod dlq_scale;
mod healing;
mod hostile_calls;
mod hostile_emits;
mod hostile_entries;
mod hostile_http;
mod hostile_output;
mod hotswap;
mod in_process;
mod languages;
mod large_streams;
mod least_privilege;
mod lifecycle;
mod metrics;
mod network_faults;
mod ops_dlq;
mod ops_groups;
mod ops_partitions;
mod ops_replay;
mod ops_status;
mod ops_trim;
mod ordering;
mod outcomes;
mod partitions;
mod profiling;
mod recovery;
mod refusal;
mod retention;
mod sandbox;
mod sentinel;
mod supervision;
mod tls;
