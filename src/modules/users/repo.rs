//! Queries on the users table. Nothing else touches it directly.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect,
    Set, SqlErr,
};

use conduit_migrations::skeleton::username_skeleton;

use crate::{
    cache::Topic,
    db::changed,
    entities::users::{ActiveModel, Column, Entity as Users, Model, same_name},
    error::{AppError, AppResult, Reason},
};

pub async fn find_by_id(db: &impl ConnectionTrait, id: i64) -> Result<Option<Model>, DbErr> {
    Users::find_by_id(id).one(db).await
}

/// The user, locked until the transaction ends.
pub async fn lock(db: &impl ConnectionTrait, id: i64) -> Result<Option<Model>, DbErr> {
    Users::find_by_id(id).lock_exclusive().one(db).await
}

/// Emails are one account whatever their case.
pub async fn find_by_email(db: &impl ConnectionTrait, email: &str) -> Result<Option<Model>, DbErr> {
    Users::find()
        .filter(same_name(Column::Email, email))
        .one(db)
        .await
}

/// Whether `username`, in any case, or a name that looks like it (the same confusable
/// skeleton) is already used by a user other than `except`.
pub async fn is_username_taken(
    db: &impl ConnectionTrait,
    username: &str,
    except: Option<i64>,
) -> Result<bool, DbErr> {
    let skeleton = username_skeleton(username);
    let mut query = Users::find().filter(
        sea_orm::Condition::any()
            .add(same_name(Column::Username, username))
            .add(Column::UsernameSkeleton.eq(skeleton)),
    );
    if let Some(id) = except {
        query = query.filter(Column::Id.ne(id));
    }
    Ok(query.one(db).await?.is_some())
}

/// Whether `value`, in any case, is already used in `column` by a user other than `except`.
pub async fn is_taken(
    db: &impl ConnectionTrait,
    column: Column,
    value: &str,
    except: Option<i64>,
) -> Result<bool, DbErr> {
    let mut query = Users::find().filter(same_name(column, value));
    if let Some(id) = except {
        query = query.filter(Column::Id.ne(id));
    }
    Ok(query.one(db).await?.is_some())
}

pub struct NewRow {
    pub username: String,
    pub email: String,
    pub password_hash: String,
}

pub async fn insert(db: &impl ConnectionTrait, row: &NewRow) -> AppResult<Model> {
    let now = chrono::Utc::now();
    ActiveModel {
        username: Set(row.username.clone()),
        username_skeleton: Set(Some(username_skeleton(&row.username))),
        email: Set(row.email.clone()),
        password_hash: Set(row.password_hash.clone()),
        bio: Set(None),
        image: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await
    .map_err(unique_violation)
}

/// Saves changes to a locked row; `updated_at` never goes backwards.
pub async fn save(
    db: &impl ConnectionTrait,
    previous: &Model,
    mut row: ActiveModel,
) -> AppResult<Model> {
    row.updated_at = Set(chrono::Utc::now().max(previous.updated_at));
    if let sea_orm::ActiveValue::Set(username) = &row.username {
        row.username_skeleton = Set(Some(username_skeleton(username)));
    }
    let saved = row.update(db).await.map_err(unique_violation)?;
    // As authors are shown: any change may show.
    changed(Topic::User(saved.id));
    Ok(saved)
}

/// A concurrent writer can take a username or email between our check and our write; the
/// unique index (on the lowered value) catches it, and the index name says which field.
fn unique_violation(e: DbErr) -> AppError {
    match e.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(detail)) => {
            if detail.contains("email") {
                AppError::Conflict(Reason::EmailTaken)
            } else {
                AppError::Conflict(Reason::UsernameTaken)
            }
        }
        _ => AppError::from(e),
    }
}

/// Foreign keys that point at the user making a request.
const CALLER_KEYS: &[&str] = &[
    "articles_author_fk",
    "comments_author_fk",
    "favorites_user_fk",
    "follows_follower_fk",
];

/// A write refused by a foreign key: when the reference that failed is the caller's own
/// user (deleted while its token was still in use), the request is unauthenticated — 401,
/// as for any token whose user is gone — not a 500. Any other failure goes to
/// `otherwise`.
pub async fn caller_or(
    db: &impl ConnectionTrait,
    caller: i64,
    e: DbErr,
    otherwise: impl FnOnce(DbErr) -> AppError,
) -> AppError {
    if !matches!(e.sql_err(), Some(SqlErr::ForeignKeyConstraintViolation(_))) {
        return otherwise(e);
    }
    let message = e.to_string();
    let caller_gone = if message.contains("_fk") {
        // Postgres names the constraint (and its transaction is aborted now).
        CALLER_KEYS.iter().any(|key| message.contains(key))
    } else {
        // SQLite does not; the failed statement left its transaction usable.
        matches!(find_by_id(db, caller).await, Ok(None))
    };
    if caller_gone {
        AppError::Unauthorized(Reason::TokenInvalid)
    } else {
        otherwise(e)
    }
}
