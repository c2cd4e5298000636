//! Keyset pages with opaque, tamper-evident tokens (AIP-158), for the gRPC lists.
//!
//! Lists are ordered newest first by `(created_at, id)`. A page token names the last item
//! of the previous page; the next page starts strictly after it, so a walk neither repeats
//! nor skips items while new ones are inserted (they sort before the walk's position).
//! The token is signed (HMAC-SHA256, key derived from the JWT secret) over its cursor and
//! the request's *scope* — which list, with which filters — so a token altered, minted by
//! hand, issued by another deployment, or replayed with other filters is refused with
//! `INVALID_ARGUMENT` / `INVALID_PAGE_TOKEN` rather than silently walking something else.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sea_orm::{ColumnTrait, sea_query::Expr};
use sha2::Sha256;

use crate::{
    error::{AppError, AppResult, Reason},
    validation::Violations,
};

pub const DEFAULT_PAGE_SIZE: u64 = 20;
pub const MAX_PAGE_SIZE: u64 = 100;

/// Token layout version; a new layout gets a new number so old tokens fail cleanly.
const VERSION: u8 = 1;
const PAYLOAD_LEN: usize = 1 + 8 + 8;
/// Truncated HMAC: 128 bits is ample against forgery of a token that only moves a cursor.
const TAG_LEN: usize = 16;

/// A position in a newest-first list: the last item already returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: i64,
}

impl Cursor {
    /// Rows after this cursor in newest-first order: `(created_at, id) < cursor`, as one
    /// row-value comparison so the `(created_at, id)` indexes serve it.
    pub fn follows<C: ColumnTrait>(self, created_at: C, id: C) -> Expr {
        use sea_orm::sea_query::ExprTrait;
        Expr::tuple([created_at.into_expr(), id.into_expr()]).lt(Expr::tuple([
            Expr::val(self.created_at),
            Expr::val(self.id),
        ]))
    }
}

/// What one page asks for: up to `size` items after `after` (from the start when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyset {
    pub size: u64,
    pub after: Option<Cursor>,
}

/// The page a caller asked for, as it came over the wire.
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    /// 0 means the default; more than the maximum is read as the maximum (AIP-158).
    pub page_size: i32,
    /// Empty for the first page.
    pub page_token: String,
}

#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// Signs and checks page tokens.
pub struct PageTokens {
    key: [u8; 32],
}

/// Which list a token belongs to: a label and the filters that shape the list, each
/// length-prefixed so no two different scopes encode alike.
#[derive(Debug, Clone)]
pub struct PageScope(Vec<u8>);

impl PageScope {
    pub fn new(list: &str) -> Self {
        let mut scope = PageScope(Vec::new());
        scope.push(list.as_bytes());
        scope
    }

    /// An optional filter: absent and empty are different scopes.
    pub fn with(mut self, filter: Option<&str>) -> Self {
        match filter {
            Some(value) => {
                self.0.push(1);
                self.push(value.as_bytes());
            }
            None => self.0.push(0),
        }
        self
    }

    fn push(&mut self, bytes: &[u8]) {
        self.0
            .extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        self.0.extend_from_slice(bytes);
    }
}

impl PageTokens {
    /// Keyed from `secret` under a label of its own, so a page token can never pass for
    /// any other signed value.
    pub fn new(secret: &[u8]) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"conduit page tokens v1");
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    /// The page `query` asks for within `scope`.
    pub fn open(&self, scope: &PageScope, query: &PageQuery) -> AppResult<Keyset> {
        let size = match query.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => {
                return Err(AppError::Validation(vec![(
                    "page_size",
                    "must be 0 (the default) or more".into(),
                )]));
            }
            n => (n as u64).min(MAX_PAGE_SIZE),
        };
        let after = match query.page_token.as_str() {
            "" => None,
            token => Some(self.verify(scope, token).ok_or_else(|| {
                AppError::Invalid(
                    Reason::InvalidPageToken,
                    "is invalid, or was issued for another list or other filters".into(),
                )
            })?),
        };
        Ok(Keyset { size, after })
    }

    /// The token for the page after `last`; empty when there is none.
    pub fn next(&self, scope: &PageScope, last: Option<Cursor>) -> String {
        let Some(cursor) = last else {
            return String::new();
        };
        let Some(nanos) = cursor.created_at.timestamp_nanos_opt() else {
            // Outside 1677..2262: no token rather than a wrong one; the walk ends here.
            return String::new();
        };
        let mut token = Vec::with_capacity(PAYLOAD_LEN + TAG_LEN);
        token.push(VERSION);
        token.extend_from_slice(&nanos.to_be_bytes());
        token.extend_from_slice(&cursor.id.to_be_bytes());
        let tag = self.tag(scope, &token);
        token.extend_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(token)
    }

    fn verify(&self, scope: &PageScope, token: &str) -> Option<Cursor> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        if bytes.len() != PAYLOAD_LEN + TAG_LEN || bytes[0] != VERSION {
            return None;
        }
        let (payload, tag) = bytes.split_at(PAYLOAD_LEN);
        self.mac(scope, payload).verify_truncated_left(tag).ok()?;
        let nanos = i64::from_be_bytes(payload[1..9].try_into().ok()?);
        let id = i64::from_be_bytes(payload[9..17].try_into().ok()?);
        Some(Cursor {
            created_at: DateTime::from_timestamp_nanos(nanos),
            id,
        })
    }

    fn mac(&self, scope: &PageScope, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(&(scope.0.len() as u64).to_be_bytes());
        mac.update(&scope.0);
        mac.update(payload);
        mac
    }

    fn tag(&self, scope: &PageScope, payload: &[u8]) -> [u8; 32] {
        self.mac(scope, payload).finalize().into_bytes().into()
    }
}

impl Keyset {
    /// How many rows to fetch: one more than the page, to learn whether another follows.
    pub fn fetch(self) -> u64 {
        self.size + 1
    }

    /// Cuts rows fetched with [`Keyset::fetch`] down to the page, and says where the next
    /// page starts (`None` on the last page, so a walk never ends on an empty page).
    pub fn cut<R>(self, rows: &mut Vec<R>, cursor_of: impl Fn(&R) -> Cursor) -> Option<Cursor> {
        let more = rows.len() as u64 > self.size;
        rows.truncate(self.size as usize);
        if more {
            rows.last().map(cursor_of)
        } else {
            None
        }
    }
}

/// Offset pages (REST's `limit` and `offset`).
pub const DEFAULT_LIMIT: i64 = 20;

pub const MAX_LIMIT: i64 = 100;

/// Deepest offset a page may start at: an offset page costs a scan of everything it
/// skips, so deeper walks use keyset page tokens (the gRPC lists).
pub const MAX_OFFSET: i64 = 10_000;

#[derive(Debug, Default, Clone, Copy)]
pub struct PageRequest {
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl PageRequest {
    /// `(limit, offset)` within bounds, 20 when absent.
    pub fn validate(self) -> AppResult<(u64, u64)> {
        self.bounded(DEFAULT_LIMIT)
    }

    /// `(limit, offset)` within bounds: limit 1 to [`MAX_LIMIT`] (`default_limit` when
    /// absent), offset 0 to [`MAX_OFFSET`].
    pub fn bounded(self, default_limit: i64) -> AppResult<(u64, u64)> {
        let limit = self.limit.unwrap_or(default_limit);
        let offset = self.offset.unwrap_or(0);
        Violations::new()
            .check(
                (1..=MAX_LIMIT).contains(&limit),
                "limit",
                &format!("must be between 1 and {MAX_LIMIT}"),
            )
            .check(
                (0..=MAX_OFFSET).contains(&offset),
                "offset",
                &format!("must be between 0 and {MAX_OFFSET} (page further with page tokens)"),
            )
            .finish()?;
        Ok((limit as u64, offset as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(token: &str) -> PageQuery {
        PageQuery {
            page_size: 0,
            page_token: token.into(),
        }
    }

    #[test]
    fn tokens_round_trip_within_their_scope_only() {
        let tokens = PageTokens::new(b"secret");
        let scope = PageScope::new("articles").with(Some("dragons")).with(None);
        let cursor = Cursor {
            created_at: DateTime::from_timestamp_nanos(1_764_000_000_123_456_789),
            id: 42,
        };
        let token = tokens.next(&scope, Some(cursor));
        let page = tokens.open(&scope, &query(&token)).expect("own token");
        assert_eq!(page.after, Some(cursor));
        assert_eq!(page.size, DEFAULT_PAGE_SIZE);

        let other_filter = PageScope::new("articles").with(Some("dragon")).with(None);
        let moved_filter = PageScope::new("articles").with(None).with(Some("dragons"));
        let other_key = PageTokens::new(b"other secret");
        for (tokens, scope) in [
            (&tokens, &other_filter),
            (&tokens, &moved_filter),
            (&other_key, &scope),
        ] {
            let err = tokens.open(scope, &query(&token)).expect_err("foreign");
            assert_eq!(err.reason(), Reason::InvalidPageToken);
        }

        let mut tampered = URL_SAFE_NO_PAD.decode(&token).expect("base64");
        tampered[16] ^= 1;
        let tampered = URL_SAFE_NO_PAD.encode(tampered);
        for bad in [tampered.as_str(), "garbage", "AAAA", &token[1..]] {
            let err = tokens.open(&scope, &query(bad)).expect_err("tampered");
            assert_eq!(err.reason(), Reason::InvalidPageToken, "{bad}");
        }
    }

    #[test]
    fn page_sizes() {
        let tokens = PageTokens::new(b"secret");
        let scope = PageScope::new("feed");
        let size = |n| {
            tokens.open(
                &scope,
                &PageQuery {
                    page_size: n,
                    page_token: String::new(),
                },
            )
        };
        assert_eq!(size(0).expect("default").size, 20);
        assert_eq!(size(7).expect("asked").size, 7);
        assert_eq!(size(1000).expect("capped").size, 100);
        assert_eq!(
            size(-1).expect_err("negative").reason(),
            Reason::ValidationFailed
        );
    }

    #[test]
    fn page_bounds() {
        assert_eq!(
            PageRequest::default().validate().expect("defaults"),
            (20, 0)
        );
        assert!(
            PageRequest {
                limit: Some(0),
                offset: None
            }
            .validate()
            .is_err()
        );
        assert!(
            PageRequest {
                limit: Some(101),
                offset: None
            }
            .validate()
            .is_err()
        );
        assert!(
            PageRequest {
                limit: None,
                offset: Some(-1)
            }
            .validate()
            .is_err()
        );
    }
}
