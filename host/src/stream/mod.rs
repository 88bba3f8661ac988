//! Everything that talks to Redis: entries, commands, scripts, the DLQ record
//! layout and self-healing connections.

pub mod commands;
pub mod dlq;
pub mod entry;
pub mod link;
pub mod scripts;
pub mod wire;

pub use commands::GroupRef;
pub use entry::{Entry, Payload};
pub use link::{ErrorClass, LinkHealth, RedisLink};
