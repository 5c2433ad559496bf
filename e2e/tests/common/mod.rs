//! Helpers shared by the e2e tests that need them (`mod common;`).

// Each test crate uses some of them only.
#![allow(dead_code)]

pub mod certs;
pub mod replica;
