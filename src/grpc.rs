//! Helpers shared by the gRPC adapters.

use crate::error::{AppError, AppResult, Reason};

/// `google.protobuf.Timestamp` for a UTC time.
pub fn timestamp(t: &chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// The fields an update changes (AIP-134).
#[derive(Debug, PartialEq, Eq)]
pub struct UpdateMask(Vec<&'static str>);

impl UpdateMask {
    /// The mask's paths, `*` meaning every updatable field; without a mask (or with an
    /// empty one) every updatable field `populated` says is set. A path that does not name
    /// an updatable field (an output-only one, a typo) is refused: silently ignoring it
    /// would report success for a change that never happened.
    pub fn resolve(
        mask: Option<prost_types::FieldMask>,
        updatable: &[&'static str],
        populated: impl Fn(&str) -> bool,
    ) -> AppResult<Self> {
        let paths = mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Ok(UpdateMask(
                updatable.iter().copied().filter(|f| populated(f)).collect(),
            ));
        }
        if paths.iter().any(|p| p == "*") {
            return Ok(UpdateMask(updatable.to_vec()));
        }
        let mut fields = Vec::with_capacity(paths.len());
        for path in &paths {
            match updatable.iter().find(|f| **f == path) {
                Some(field) => fields.push(*field),
                None => {
                    return Err(AppError::Invalid(
                        Reason::InvalidUpdateMask,
                        format!(
                            "names {:?}, which cannot be updated (updatable: {})",
                            path.chars().take(64).collect::<String>(),
                            updatable.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(UpdateMask(fields))
    }

    pub fn has(&self, field: &str) -> bool {
        self.0.contains(&field)
    }

    /// `value` when the mask names `field`: the change to make, or `None` to leave it.
    pub fn pick<T>(&self, field: &str, value: T) -> Option<T> {
        self.has(field).then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
        Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        })
    }

    const FIELDS: &[&str] = &["title", "body"];

    #[test]
    fn masks_name_fields_and_absent_means_populated() {
        let only_body = |f: &str| f == "body";
        let resolved = |m| UpdateMask::resolve(m, FIELDS, only_body).expect("valid");
        assert_eq!(resolved(None), UpdateMask(vec!["body"]));
        assert_eq!(resolved(mask(&[])), UpdateMask(vec!["body"]));
        assert_eq!(resolved(mask(&["title"])), UpdateMask(vec!["title"]));
        assert_eq!(resolved(mask(&["*"])), UpdateMask(vec!["title", "body"]));
        for bad in [&["slug"][..], &["title", "Title"], &[""]] {
            let err = UpdateMask::resolve(mask(bad), FIELDS, only_body).expect_err("refused");
            assert_eq!(err.reason(), Reason::InvalidUpdateMask, "{bad:?}");
        }
    }
}
