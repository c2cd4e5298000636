//! The messages of a Connect call: its encoding, a GET's query, transcoding between
//! Connect's JSON or protobuf and the gRPC call's protobuf, and the answer's one frame.

use axum::http::{HeaderMap, HeaderValue};
use base64::{
    Engine, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use bytes::Bytes;
use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};

use super::{Refused, compression, internal, malformed};

/// How the caller's message (and so the answer) is encoded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    Json,
    Proto,
}

impl Encoding {
    pub(super) fn named(name: &str) -> Option<Encoding> {
        match name {
            "json" => Some(Encoding::Json),
            "proto" => Some(Encoding::Proto),
            _ => None,
        }
    }

    pub(super) fn of_content_type(headers: &HeaderMap) -> Option<Encoding> {
        let media_type = crate::context::media_type(headers);
        let subtype = media_type
            .get(..12)
            .filter(|prefix| prefix.eq_ignore_ascii_case("application/"))
            .and(media_type.get(12..))?;
        Encoding::named(&subtype.to_ascii_lowercase())
    }

    pub(super) fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Encoding::Json => "application/json",
            Encoding::Proto => "application/proto",
        })
    }
}

/// A GET's query: `encoding`, `message` (percent-encoded, or base64url with `base64=1`),
/// and optionally `connect=v1` and `compression=identity`.
pub(super) fn get_query(query: &str) -> Result<(Encoding, Bytes), Refused> {
    let mut encoding = None;
    let mut message = None;
    let mut base64 = false;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = form_decoded(value);
        match key {
            "encoding" => {
                let name = String::from_utf8_lossy(&value);
                encoding =
                    Some(Encoding::named(&name).ok_or_else(|| {
                        malformed(format!("encoding {name:?} is not json or proto"))
                    })?);
            }
            "message" => message = Some(value),
            "base64" => base64 = value == b"1",
            "compression" => compression(std::str::from_utf8(&value).ok())?,
            "connect" if value != b"v1" => {
                return Err(malformed("connect must be v1".into()));
            }
            _ => {}
        }
    }
    let encoding =
        encoding.ok_or_else(|| malformed("a GET needs encoding=json or encoding=proto".into()))?;
    let message = message.unwrap_or_default();
    let message = if base64 {
        BASE64URL
            .decode(&message)
            .map_err(|e| malformed(format!("message is not base64url: {e}")))?
    } else {
        message
    };
    Ok((encoding, message.into()))
}

/// base64url, with or without padding: Connect clients may leave it off, or keep it.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `application/x-www-form-urlencoded` decoding, to bytes: a message need not be UTF-8.
pub(super) fn form_decoded(value: &str) -> Vec<u8> {
    let spaced = value.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).collect()
}

/// The request message as protobuf: JSON is transcoded, protobuf checked (tonic would
/// answer INTERNAL for a message that does not decode; the caller's mistake is
/// INVALID_ARGUMENT). An empty body is the empty message, in either encoding.
pub(super) fn request_message(
    input: &MessageDescriptor,
    encoding: Encoding,
    message: Bytes,
) -> Result<Bytes, Refused> {
    match encoding {
        Encoding::Proto => {
            DynamicMessage::decode(input.clone(), message.as_ref()).map_err(|e| {
                malformed(format!("the message is not a {}: {e}", input.full_name()))
            })?;
            Ok(message)
        }
        Encoding::Json if message.is_empty() => Ok(Bytes::new()),
        Encoding::Json => {
            let mut json = serde_json::Deserializer::from_slice(&message);
            // Unknown fields are skipped, as connect-go and the protobuf encoding do: a
            // client built from a newer schema still gets through.
            let decoded = DynamicMessage::deserialize_with_options(
                input.clone(),
                &mut json,
                &DeserializeOptions::new().deny_unknown_fields(false),
            )
            .and_then(|decoded| json.end().map(|()| decoded))
            .map_err(|e| malformed(format!("the message is not a {}: {e}", input.full_name())))?;
            Ok(decoded.encode_to_vec().into())
        }
    }
}

/// The answer's message as canonical proto3 JSON (camelCase names, defaults left out,
/// 64-bit integers as strings).
pub(super) fn response_json(output: &MessageDescriptor, message: &[u8]) -> Result<Bytes, Refused> {
    let decoded = DynamicMessage::decode(output.clone(), message)
        .map_err(|e| internal(anyhow::anyhow!("decoding the gRPC answer: {e}")))?;
    let mut json = Vec::with_capacity(message.len() * 2);
    decoded
        .serialize_with_options(
            &mut serde_json::Serializer::new(&mut json),
            &SerializeOptions::new(),
        )
        .map_err(|e| internal(anyhow::anyhow!("writing the answer as JSON: {e}")))?;
    Ok(json.into())
}

/// The message of a unary gRPC answer, decompressed when the service compressed it (it
/// may, for a stored answer first given to a gRPC caller that accepted gzip).
pub(super) fn answer_message(
    data: &Bytes,
    encoding: Option<&HeaderValue>,
) -> Result<Bytes, Refused> {
    let (compressed, message) = unframe(data)
        .ok_or_else(|| internal(anyhow::anyhow!("the gRPC answer is not one message")))?;
    if !compressed {
        return Ok(data.slice_ref(message));
    }
    if encoding.is_none_or(|encoding| encoding != "gzip") {
        return Err(internal(anyhow::anyhow!(
            "the gRPC answer is compressed as {encoding:?}"
        )));
    }
    let mut inflated = Vec::with_capacity(message.len() * 4);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(flate2::read::GzDecoder::new(message), MAX_ANSWER_BYTES),
        &mut inflated,
    )
    .map_err(|e| internal(anyhow::anyhow!("inflating the gRPC answer: {e}")))?;
    Ok(inflated.into())
}

/// Larger than any answer conduit gives (a page is at most 100 articles); a bound, so a
/// corrupt stored answer cannot inflate without end.
const MAX_ANSWER_BYTES: u64 = 64 << 20;

/// The one message of a unary gRPC answer, and whether it is compressed.
pub(super) fn unframe(data: &[u8]) -> Option<(bool, &[u8])> {
    let (&compressed, rest) = data.split_first()?;
    let length = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let message = rest.get(4..4 + length)?;
    (compressed <= 1 && rest.len() == 4 + length).then_some((compressed == 1, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_query_carries_the_message_plain_or_base64url() {
        let (encoding, message) =
            get_query("connect=v1&encoding=json&message=%7B%22limit%22%3A2%7D").expect("query");
        assert!(encoding == Encoding::Json);
        assert_eq!(&message[..], br#"{"limit":2}"#);
        let (encoding, message) = get_query("encoding=proto&base64=1&message=CAI").expect("query");
        assert!(encoding == Encoding::Proto);
        assert_eq!(&message[..], &[8, 2]);
        let (_, padded) = get_query("encoding=proto&base64=1&message=CAI%3D").expect("padded");
        assert_eq!(&padded[..], &[8, 2]);
        assert!(get_query("message=e30").is_err(), "encoding is required");
        assert!(get_query("encoding=xml&message=x").is_err());
        assert!(get_query("encoding=json&connect=v2").is_err());
        assert!(get_query("encoding=json&compression=gzip").is_err());
    }

    #[test]
    fn content_types_name_the_encoding() {
        let of = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static(value),
            );
            Encoding::of_content_type(&headers)
        };
        assert!(of("application/json") == Some(Encoding::Json));
        assert!(of("Application/JSON; charset=utf-8") == Some(Encoding::Json));
        assert!(of("application/proto") == Some(Encoding::Proto));
        assert!(of("application/xml").is_none());
        assert!(of("text/json").is_none());
    }

    #[test]
    fn one_message_is_unframed_and_inflated_when_gzipped() {
        assert_eq!(
            unframe(&[0, 0, 0, 0, 2, 8, 2]),
            Some((false, &[8u8, 2][..]))
        );
        assert_eq!(unframe(&[0, 0, 0, 0, 0]), Some((false, &[][..])));
        assert_eq!(unframe(&[1, 0, 0, 0, 1, 8]), Some((true, &[8u8][..])));
        assert_eq!(unframe(&[2, 0, 0, 0, 1, 8]), None, "no such flag");
        assert_eq!(unframe(&[0, 0, 0, 0, 3, 8, 2]), None, "short");
        assert_eq!(unframe(&[0, 0, 0, 0, 1, 8, 2]), None, "two messages");
        assert_eq!(unframe(&[0, 0, 0]), None);

        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gzip, &[8, 2]).expect("gzip");
        let gzipped = gzip.finish().expect("gzip");
        let mut frame = vec![1];
        frame.extend_from_slice(&(gzipped.len() as u32).to_be_bytes());
        frame.extend_from_slice(&gzipped);
        let gzip_header = HeaderValue::from_static("gzip");
        let inflated = answer_message(&Bytes::from(frame.clone()), Some(&gzip_header));
        assert_eq!(inflated.ok().as_deref(), Some(&[8u8, 2][..]));
        assert!(
            answer_message(&Bytes::from(frame), None).is_err(),
            "compressed, but how?"
        );
    }
}
