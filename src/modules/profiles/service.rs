//! Profiles and follows, protocol-free. `ProfileView` and `author_views` are also how
//! articles and comments show their authors.

use std::collections::{HashMap, HashSet};

use sea_orm::ConnectionTrait;

use super::repo;
use crate::{
    auth::Principal,
    db::Store,
    entities::users,
    error::{AppError, AppResult, Reason},
    modules::users::repo::caller_or,
    state::AppState,
    values::ProfileName,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileView {
    pub username: String,
    pub bio: Option<String>,
    pub image: Option<String>,
    pub following: bool,
}

impl ProfileView {
    pub fn of(user: &users::Model, following: bool) -> Self {
        ProfileView {
            username: user.username.clone(),
            bio: user.bio.clone(),
            image: user.image.clone(),
            following,
        }
    }
}

/// Profiles of `authors` as `viewer` sees them, keyed by user id; one statement for the
/// follow flags whatever the number of authors (none for anonymous viewers).
pub async fn author_views<'a>(
    db: &impl ConnectionTrait,
    viewer: Option<Principal>,
    authors: impl IntoIterator<Item = &'a users::Model>,
) -> AppResult<HashMap<i64, ProfileView>> {
    let authors: HashMap<i64, &users::Model> = authors.into_iter().map(|u| (u.id, u)).collect();
    let followed = match viewer {
        Some(p) => {
            repo::followed_among(db, p.user_id, &authors.keys().copied().collect::<Vec<_>>())
                .await?
        }
        None => HashSet::new(),
    };
    Ok(authors
        .into_iter()
        .map(|(id, user)| (id, ProfileView::of(user, followed.contains(&id))))
        .collect())
}

#[derive(Clone)]
pub struct ProfileService {
    store: Store,
}

impl ProfileService {
    pub fn new(state: &AppState) -> Self {
        Self {
            store: state.store.clone(),
        }
    }

    pub async fn get(&self, viewer: Option<Principal>, username: &str) -> AppResult<ProfileView> {
        let username = ProfileName::lookup(username)?;
        self.store
            .read(move |txn| {
                let username = username.clone();
                Box::pin(async move {
                    let user = find(txn, &username).await?;
                    let following = match viewer {
                        Some(p) => repo::followed_among(txn, p.user_id, &[user.id])
                            .await?
                            .contains(&user.id),
                        None => false,
                    };
                    Ok(ProfileView::of(&user, following))
                })
            })
            .await
    }

    pub async fn follow(&self, viewer: Principal, username: &str) -> AppResult<ProfileView> {
        self.set_following(viewer, username, true).await
    }

    pub async fn unfollow(&self, viewer: Principal, username: &str) -> AppResult<ProfileView> {
        self.set_following(viewer, username, false).await
    }

    async fn set_following(
        &self,
        viewer: Principal,
        username: &str,
        follow: bool,
    ) -> AppResult<ProfileView> {
        let username = ProfileName::lookup(username)?;
        self.store
            .write(move |txn| {
                let username = username.clone();
                Box::pin(async move {
                    let user = find(txn, &username).await?;
                    if follow && user.id == viewer.user_id {
                        return Err(AppError::Invalid(
                            Reason::CannotFollowSelf,
                            "cannot be followed by yourself".into(),
                        ));
                    }
                    if follow {
                        if let Err(e) = repo::follow(txn, viewer.user_id, user.id).await {
                            return Err(caller_or(txn, viewer.user_id, e, |e| {
                                match e.sql_err() {
                                    // The followee was deleted meanwhile.
                                    Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_)) => {
                                        AppError::NotFound(Reason::ProfileNotFound)
                                    }
                                    _ => AppError::from(e),
                                }
                            })
                            .await);
                        }
                    } else {
                        repo::unfollow(txn, viewer.user_id, user.id).await?;
                    }
                    Ok(ProfileView::of(&user, follow))
                })
            })
            .await
    }
}

async fn find(db: &impl ConnectionTrait, username: &ProfileName) -> AppResult<users::Model> {
    repo::find_user(db, username.as_str())
        .await?
        .ok_or(AppError::NotFound(Reason::ProfileNotFound))
}

pub async fn user_by_id(db: &impl ConnectionTrait, id: i64) -> AppResult<Option<users::Model>> {
    Ok(repo::find_user_by_id(db, id).await?)
}
