//! Everything that talks to Redis: entries, commands, the fenced scripts and
//! their typed wrappers, the DLQ record layout and self-healing connections.

pub mod claims;
pub mod cluster;
pub mod commands;
pub mod commits;
pub mod consumers;
pub mod count;
pub mod dlq;
pub mod dlq_scan;
pub mod entries;
pub mod groups;
pub mod inspect;
pub mod leases;
pub mod link;
pub mod outbox;
pub mod payloads;
pub mod pending;
pub mod redrive;
pub mod reply;
pub mod retention;
pub mod scripts;
pub mod wire;

pub use claims::{ClaimSpec, Claimed, DeadLetters, Target};
pub use commands::GroupRef;

pub use link::{Cancelled, ErrorClass, LinkError, LinkHealth, RedisLink};
pub use payloads::PayloadReader;
