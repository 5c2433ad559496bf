//! Durable storage: the Raft log on raft-log, the state machine's snapshots
//! in a file of the data dir, and the change feed from the state machine to
//! its readers.

pub mod feed;
pub mod log_store;
mod msgpack;
pub mod sm_store;
pub mod snapshot;
#[cfg(test)]
mod tests;

pub use feed::ChangeFeed;
pub use log_store::LogStore;
pub use sm_store::StateMachineStore;
pub use snapshot::SmData;
