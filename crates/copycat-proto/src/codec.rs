//! The encoding of application values: commands, queries, outputs, errors
//! and event payloads of typed state machines. Plain postcard, with
//! trailing bytes rejected. Servers (`copycat-replica`'s `Typed`) and
//! clients (`copycat-client`'s typed handles) both use these two functions,
//! so a value encoded on one side decodes on the other.

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
