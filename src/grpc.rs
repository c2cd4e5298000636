//! Helpers shared by the gRPC adapters.

/// `google.protobuf.Timestamp` for a UTC time.
pub fn timestamp(t: &chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}
