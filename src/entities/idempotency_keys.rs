use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_keys")]
pub struct Model {
    /// Whose key: `user:<id>`, or `anonymous` for unauthenticated calls.
    #[sea_orm(primary_key, auto_increment = false)]
    pub scope: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// Hash of the method, path and body the key was first used with.
    pub fingerprint: String,
    /// HTTP status of the stored answer; `None` while the first request runs.
    pub status: Option<i32>,
    /// JSON: the answer's headers and trailers worth replaying.
    pub response_headers: Option<String>,
    pub response_body: Option<Vec<u8>>,
    /// When the running request claimed the key (a claim older than the lease is stale).
    pub locked_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    /// The fencing token of the request holding the key: a takeover replaces it, and a
    /// write commits only while it still matches.
    pub claim: Option<String>,
    /// When the holder's write committed: such a claim is never taken over.
    pub committed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
