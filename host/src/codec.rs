//! How typed values are stored: serde to CBOR and back (the one copy of it).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// `value` as CBOR bytes.
///
/// Edge cases: a value serde cannot encode (e.g. a map with non-string keys a `Serialize`
/// impl refuses) → [`Error::Serialize`].
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).map_err(|err| Error::Serialize(err.to_string()))?;
    Ok(bytes)
}

/// The `T` that `bytes` encode.
///
/// Edge cases: bytes that are not CBOR, or CBOR of another shape → [`Error::Deserialize`].
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    ciborium::from_reader(bytes).map_err(|err| Error::Deserialize(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Page {
        url: String,
        status: u16,
    }

    #[test]
    fn cbor_round_trip() {
        let page = Page {
            url: "https://example.com".into(),
            status: 200,
        };
        let bytes = encode(&page).expect("encodes");
        assert_eq!(decode::<Page>(&bytes).expect("decodes"), page);
        let text = encode("hello").expect("encodes unsized str");
        assert_eq!(decode::<String>(&text).expect("decodes"), "hello");
    }

    #[test]
    fn decoding_the_wrong_type_is_a_deserialize_error() {
        let bytes = encode(&42_u32).expect("encodes");
        assert!(matches!(decode::<Page>(&bytes), Err(Error::Deserialize(_))));
        assert!(matches!(
            decode::<u32>(&[0xff, 0x00]),
            Err(Error::Deserialize(_))
        ));
    }
}
