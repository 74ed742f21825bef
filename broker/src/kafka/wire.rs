//! Kafka framing details around the message types: the request header
//! (v1: `api_key i16, api_version i16, correlation_id i32, client_id
//! nullable string`; v2 adds tagged fields) and the response header (v0:
//! `correlation_id i32`; v1 adds tagged fields). The frame's `i32` length
//! prefix is read by the connection's codec, which checks it against
//! `max_frame_bytes` before allocating.
//!
//! ```text
//! request:  length i32 | api_key i16 | api_version i16 | correlation_id i32
//!           | client_id (i16 length, -1 = null) | [tagged fields] | body
//! response: length i32 | correlation_id i32 | [tagged fields] | body
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::KafkaError;

/// A response's payload as chunks, written with one vectored write.
pub type Chunks = Vec<Bytes>;

/// The parsed request header.
#[derive(Debug, Clone)]
pub struct Header {
    /// The api.
    pub api: ApiKey,
    /// Its version.
    pub version: i16,
    /// Echoed in the response.
    pub correlation_id: i32,
}

/// Bytes before the client id: api key, version, correlation id.
const FIXED_HEADER: usize = 8;

/// Splits the header off `frame`, leaving the body.
///
/// # Errors
/// `ShortHeader`, `UnknownApi`, or `Malformed` when the client id or tagged
/// fields do not decode.
pub fn decode_header(frame: &mut Bytes) -> Result<Header, KafkaError> {
    if frame.len() < FIXED_HEADER {
        return Err(KafkaError::ShortHeader { len: frame.len() });
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(key).map_err(|()| KafkaError::UnknownApi { key })?;
    let header_version = api.request_header_version(version);
    let header = RequestHeader::decode(frame, header_version).map_err(|e| KafkaError::Malformed {
        api,
        version,
        reason: e.to_string(),
    })?;
    Ok(Header { api, version, correlation_id: header.correlation_id })
}

/// Decodes a request body at its version.
///
/// # Errors
/// `Malformed` when it does not decode.
pub fn decode<T: Decodable>(header: &Header, body: &mut Bytes) -> Result<T, KafkaError> {
    T::decode(body, header.version).map_err(|e| malformed(header, e))
}

/// A `Malformed` error for this request.
pub fn malformed(header: &Header, e: impl std::fmt::Display) -> KafkaError {
    KafkaError::Malformed { api: header.api, version: header.version, reason: e.to_string() }
}

/// Encodes a response body at the request's version, after its response
/// header.
///
/// # Errors
/// `Encode` when a value does not fit the wire format.
pub fn encode<T: Encodable>(header: &Header, body: &T) -> Result<Chunks, KafkaError> {
    encode_at(header, header.version, body)
}

/// Encodes a response body at `version` (ApiVersions answers an
/// unsupported version at v0).
///
/// # Errors
/// `Encode` when a value does not fit the wire format.
pub fn encode_at<T: Encodable>(header: &Header, version: i16, body: &T) -> Result<Chunks, KafkaError> {
    let error =
        |e: &dyn std::fmt::Display| KafkaError::Encode { api: header.api, version, reason: e.to_string() };
    let size = body.compute_size(version).map_err(|e| error(&e))?;
    let mut buf = response_header(header, size);
    body.encode(&mut buf, version).map_err(|e| error(&e))?;
    Ok(vec![buf.freeze()])
}

/// A buffer holding the response header, with room for `body` more bytes.
pub fn response_header(header: &Header, body: usize) -> BytesMut {
    let mut buf = BytesMut::with_capacity(5 + body);
    buf.put_i32(header.correlation_id);
    if header.api.response_header_version(header.version) >= 1 {
        buf.put_u8(0); // no tagged fields
    }
    buf
}

/// Runs `f` on a blocking thread and encodes what it returns.
pub(super) async fn blocking<T: kafka_protocol::protocol::Encodable + Send + 'static>(
    header: Header,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<Option<Chunks>, KafkaError> {
    let response = tokio::task::spawn_blocking(f).await.map_err(|e| KafkaError::Encode {
        api: header.api,
        version: header.version,
        reason: e.to_string(),
    })?;
    encode(&header, &response).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &[u8]) -> Bytes {
        Bytes::copy_from_slice(bytes)
    }

    #[test]
    fn header_v1_and_v2() {
        // Metadata v1 (header v1): key 3, version 1, correlation 7, client "ab".
        let mut f = frame(&[0, 3, 0, 1, 0, 0, 0, 7, 0, 2, b'a', b'b', 0xAA]);
        let h = decode_header(&mut f).unwrap();
        assert_eq!((h.api, h.version, h.correlation_id), (ApiKey::Metadata, 1, 7));
        assert_eq!(&f[..], &[0xAA], "the body is what follows");
        // Metadata v9 (header v2): null client id, no tagged fields.
        let mut f = frame(&[0, 3, 0, 9, 0, 0, 0, 8, 0xFF, 0xFF, 0, 0xBB]);
        let h = decode_header(&mut f).unwrap();
        assert_eq!(h.correlation_id, 8);
        assert_eq!(&f[..], &[0xBB]);
    }

    #[test]
    fn bad_headers_are_typed_errors() {
        assert!(matches!(decode_header(&mut frame(&[0, 3])), Err(KafkaError::ShortHeader { len: 2 })));
        assert!(matches!(
            decode_header(&mut frame(&[0x7F, 0, 0, 0, 0, 0, 0, 1])),
            Err(KafkaError::UnknownApi { key: 0x7F00 })
        ));
        // A client id longer than the frame.
        let mut f = frame(&[0, 3, 0, 1, 0, 0, 0, 7, 0x7F, 0xFF, b'a']);
        assert!(matches!(decode_header(&mut f), Err(KafkaError::Malformed { .. })));
    }

    #[test]
    fn response_headers_by_version() {
        let h = Header { api: ApiKey::Metadata, version: 9, correlation_id: 5 };
        assert_eq!(&response_header(&h, 0)[..], &[0, 0, 0, 5, 0], "flexible: tagged fields");
        let h = Header { api: ApiKey::ApiVersions, version: 3, correlation_id: 5 };
        assert_eq!(&response_header(&h, 0)[..], &[0, 0, 0, 5], "ApiVersions: always v0");
    }
}
