//! raftcron-crds: the shared vocabulary of raftcron.
//!
//! ```text
//!  YAML (kubectl / raftcron-node local) ──► types::ScheduledJob ──► validate ──► schedule::Schedule
//!                                              │                                     │
//!                                              ▼                                     ▼
//!                                      crdgen (CRD YAML)                 next fire instants (ms, UTC)
//! ```
//!
//! Types, validation, the schedule grammar, condition reasons and label keys.
//! No IO: node and operator both build on it.

pub mod names;
pub mod schedule;
pub mod types;
pub mod validate;
pub mod yaml;

pub use types::*;
