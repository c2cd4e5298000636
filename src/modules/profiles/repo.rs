//! Queries on follows, and user lookups by username for the profile pages.

use std::collections::HashSet;

use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect, Set};

use crate::{
    cache::Topic,
    db::changed,
    entities::{
        follows::{self, Entity as Follows},
        users::{self, Entity as Users},
    },
};

/// Usernames are unique regardless of case, and found in any case.
pub async fn find_user(
    db: &impl ConnectionTrait,
    username: &str,
) -> Result<Option<users::Model>, DbErr> {
    Users::find()
        .filter(users::same_name(users::Column::Username, username))
        .one(db)
        .await
}

/// Which of `candidates` `follower` follows, in one statement whatever their number.
pub async fn followed_among(
    db: &impl ConnectionTrait,
    follower: i64,
    candidates: &[i64],
) -> Result<HashSet<i64>, DbErr> {
    if candidates.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<i64> = Follows::find()
        .select_only()
        .column(follows::Column::FolloweeId)
        .filter(follows::Column::FollowerId.eq(follower))
        .filter(follows::Column::FolloweeId.is_in(candidates.iter().copied()))
        .into_tuple()
        .all(db)
        .await?;
    Ok(ids.into_iter().collect())
}

/// Idempotent: following twice is following.
pub async fn follow(db: &impl ConnectionTrait, follower: i64, followee: i64) -> Result<(), DbErr> {
    let inserted = Follows::insert(follows::ActiveModel {
        follower_id: Set(follower),
        followee_id: Set(followee),
        created_at: Set(chrono::Utc::now()),
    })
    .on_conflict_do_nothing()
    .exec_without_returning(db)
    .await?;
    if matches!(inserted, sea_orm::TryInsertResult::Inserted(n) if n > 0) {
        changed(Topic::UserFollows(follower));
    }
    Ok(())
}

pub async fn unfollow(
    db: &impl ConnectionTrait,
    follower: i64,
    followee: i64,
) -> Result<(), DbErr> {
    let deleted = Follows::delete_many()
        .filter(follows::Column::FollowerId.eq(follower))
        .filter(follows::Column::FolloweeId.eq(followee))
        .exec(db)
        .await?;
    if deleted.rows_affected > 0 {
        changed(Topic::UserFollows(follower));
    }
    Ok(())
}

pub async fn find_user_by_id(
    db: &impl ConnectionTrait,
    id: i64,
) -> Result<Option<users::Model>, DbErr> {
    Users::find_by_id(id).one(db).await
}
