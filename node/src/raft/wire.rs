//! Encoding of openraft messages inside the protobuf envelopes of
//! `proto/raft.proto`: MessagePack via serde, the same codec the log store
//! uses, so one set of serde derives (openraft's) defines the bytes.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes a message for the wire. Struct fields go by name: several types
/// skip absent optional fields, which a positional encoding cannot express.
/// Encoding cannot fail short of a bug, so a failure is reported, not unwrapped.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(v)
}

/// Decodes bytes received from a peer; malformed input is an error, never a panic.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}
