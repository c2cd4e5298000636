//! Queries on tags.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait,
};

use crate::entities::{
    article_tags::{self, Entity as ArticleTags},
    tags::{self, Entity as Tags},
};

/// Every tag used by at least one article, sorted.
pub async fn in_use(db: &impl ConnectionTrait) -> Result<Vec<String>, DbErr> {
    let used = ArticleTags::find()
        .select_only()
        .column(article_tags::Column::TagId)
        .into_query();
    Tags::find()
        .select_only()
        .column(tags::Column::Name)
        .filter(tags::Column::Id.in_subquery(used))
        .order_by_asc(tags::Column::Name)
        .into_tuple()
        .all(db)
        .await
}
