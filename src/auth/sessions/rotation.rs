//! Refresh-token rotation: a refresh exchanges the presented token for its successor;
//! within the grace period the same successor again; later, reuse ends the session.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect,
    Set, sea_query::Expr,
};

use super::{Client, Minted, SessionPolicy, digest, end, store_refresh_token};
use crate::entities::{
    refresh_tokens::{self, Entity as RefreshTokens},
    sessions::{self, Entity as Sessions},
};

/// What presenting a refresh token came to.
pub enum Rotation {
    /// Exchanged (or, within the grace period, exchanged again): the session's successor
    /// refresh token is the one derived from the presented token.
    Rotated {
        user_id: i64,
        version: i32,
        ends: DateTime<Utc>,
    },
    /// Not a token of any standing session.
    Unknown,
    /// Already exchanged, past the grace period: the session has just been ended.
    Reused,
}

/// Exchanges `presented` for `successor` (`SessionPolicy::successor` of it) in one
/// transaction. The token row is locked first, so two exchanges of one token run one
/// after the other: the second finds it rotated, within the grace period, and answers
/// the same successor.
pub async fn rotate(
    db: &impl ConnectionTrait,
    presented: &str,
    successor: &Minted,
    client: &Client,
    policy: &SessionPolicy,
) -> Result<Rotation, DbErr> {
    let now = Utc::now();
    let Some(found) = RefreshTokens::find_by_id(digest(presented))
        .lock_exclusive()
        .one(db)
        .await?
    else {
        return Ok(Rotation::Unknown);
    };
    let Some(session) = Sessions::find_by_id(found.session_id.clone())
        .lock_exclusive()
        .one(db)
        .await?
        .filter(|s| {
            s.id == successor.session_id.to_string()
                && s.revoked_at.is_none()
                && s.expires_at > now
                && s.last_used_at + policy.idle_timeout > now
        })
    else {
        return Ok(Rotation::Unknown);
    };
    match found.rotated_at {
        None => {
            RefreshTokens::update_many()
                .col_expr(refresh_tokens::Column::RotatedAt, Expr::val(now))
                .filter(refresh_tokens::Column::Digest.eq(found.digest))
                .exec(db)
                .await?;
            store_refresh_token(db, successor, now).await?;
        }
        Some(rotated) if now - rotated <= policy.refresh_grace => {
            // The successor handed out then must still be the session's live token: one
            // that was itself exchanged since is not handed out again.
            let live = RefreshTokens::find_by_id(successor.digest.clone())
                .one(db)
                .await?
                .is_some_and(|t| t.rotated_at.is_none());
            if !live {
                end(db, &session.id, now).await?;
                return Ok(Rotation::Reused);
            }
        }
        Some(_) => {
            end(db, &session.id, now).await?;
            return Ok(Rotation::Reused);
        }
    }
    let (user_id, version, ends) = (session.user_id, session.version, session.expires_at);
    let mut row: sessions::ActiveModel = session.into();
    row.last_used_at = Set(now);
    if client.user_agent.is_some() {
        row.user_agent = Set(client.user_agent.clone());
    }
    if client.ip.is_some() {
        row.ip = Set(client.ip.clone());
    }
    row.update(db).await?;
    Ok(Rotation::Rotated {
        user_id,
        version,
        ends,
    })
}
