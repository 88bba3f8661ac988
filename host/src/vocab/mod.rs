//! The shared vocabulary every layer speaks and that uses nothing above it:
//! entries and their ids and times, outcomes, the host's verdict before a
//! plugin ([`admission`]), limits, sizes, backoff, the retention policy and
//! the packed (MessagePack) encoding of emitted fields.

pub mod admission;
pub mod backoff;
pub mod entry;
pub mod ids;
pub mod limits;
pub mod msgpack;
pub mod outcome;
pub mod partition;
pub mod retention;
pub mod units;
