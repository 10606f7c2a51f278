//! The encoding [`crate::Typed`] uses for commands, queries, outputs, errors
//! and [`crate::ApplyContext::publish_value`] payloads: plain postcard.
//! Clients use the same two functions to build payloads and read answers.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encode a value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Bytes {
    // Encoding into a Vec only fails for types serde cannot represent in
    // postcard (e.g. sequences of unknown length), a programming error.
    Bytes::from(postcard::to_allocvec(value).expect("value serializes with postcard"))
}

/// Decode a value, rejecting trailing bytes.
pub fn decode<T: DeserializeOwned>(data: &[u8]) -> Result<T, postcard::Error> {
    let (value, rest) = postcard::take_from_bytes(data)?;
    if !rest.is_empty() {
        return Err(postcard::Error::DeserializeBadEncoding);
    }
    Ok(value)
}
