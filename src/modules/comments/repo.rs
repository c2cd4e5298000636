//! Queries on comments.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use crate::entities::{
    comments::{self, Entity as Comments},
    users::{self, Entity as Users},
};
use crate::pagination::Cursor;

pub type CommentRow = (comments::Model, users::Model);

/// Where a page of comments starts: after a keyset cursor, or after skipping some.
pub enum Start {
    After(Option<Cursor>),
    Skip(u64),
}

/// Newest first, with authors, in one statement: up to `limit` from `start`.
pub async fn newest(
    db: &impl ConnectionTrait,
    article_id: i64,
    limit: u64,
    start: Start,
) -> Result<Vec<CommentRow>, DbErr> {
    let mut query = Comments::find().filter(comments::Column::ArticleId.eq(article_id));
    match start {
        Start::After(Some(after)) => {
            query = query.filter(after.follows(comments::Column::CreatedAt, comments::Column::Id));
        }
        Start::After(None) => {}
        Start::Skip(offset) => query = query.offset(offset),
    }
    let rows = query
        .order_by_desc(comments::Column::CreatedAt)
        .order_by_desc(comments::Column::Id)
        .limit(limit)
        .find_also_related(Users)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(comment, author)| author.map(|a| (comment, a)))
        .collect())
}

/// The comment, locked until the transaction ends (after its article: see the articles
/// repository's lock order).
pub async fn lock(
    db: &impl ConnectionTrait,
    article_id: i64,
    id: i64,
) -> Result<Option<comments::Model>, DbErr> {
    Comments::find_by_id(id)
        .filter(comments::Column::ArticleId.eq(article_id))
        .lock_exclusive()
        .one(db)
        .await
}

pub async fn insert(
    db: &impl ConnectionTrait,
    article_id: i64,
    author_id: i64,
    body: String,
) -> Result<comments::Model, DbErr> {
    let now = chrono::Utc::now();
    comments::ActiveModel {
        article_id: Set(article_id),
        author_id: Set(author_id),
        body: Set(body),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// False when the comment was already gone.
pub async fn delete(db: &impl ConnectionTrait, id: i64) -> Result<bool, DbErr> {
    Ok(Comments::delete_by_id(id).exec(db).await?.rows_affected == 1)
}
