//! Everything users create: follows, articles with their tags, favorites and comments.
//! Link tables use composite primary keys (which also serve lookups by their first column)
//! plus an index on the second column for the reverse lookup. Foreign keys cascade so a
//! deleted article or user takes its links with it.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Follows {
    Table,
    FollowerId,
    FolloweeId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Articles {
    Table,
    Id,
    Slug,
    Title,
    Description,
    Body,
    AuthorId,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Tags {
    Table,
    Id,
    Name,
}

#[derive(DeriveIden)]
enum ArticleTags {
    Table,
    ArticleId,
    TagId,
}

#[derive(DeriveIden)]
enum Favorites {
    Table,
    UserId,
    ArticleId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Comments {
    Table,
    Id,
    ArticleId,
    AuthorId,
    Body,
    CreatedAt,
    UpdatedAt,
}

fn cascade(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

fn index(name: &str, table: impl IntoIden, columns: &[&str], unique: bool) -> IndexCreateStatement {
    let mut index = Index::create();
    index.name(name).table(table).if_not_exists();
    for column in columns {
        index.col(Alias::new(*column));
    }
    if unique {
        index.unique();
    }
    index.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Follows::Table)
                    .if_not_exists()
                    .col(big_integer(Follows::FollowerId))
                    .col(big_integer(Follows::FolloweeId))
                    .col(timestamp_with_time_zone(Follows::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(Follows::FollowerId)
                            .col(Follows::FolloweeId),
                    )
                    .foreign_key(&mut cascade(
                        "follows_follower_fk",
                        (Follows::Table, Follows::FollowerId),
                        (Users::Table, Users::Id),
                    ))
                    .foreign_key(&mut cascade(
                        "follows_followee_fk",
                        (Follows::Table, Follows::FolloweeId),
                        (Users::Table, Users::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "follows_followee_idx",
                Follows::Table,
                &["followee_id"],
                false,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Articles::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Articles::Id))
                    .col(string(Articles::Slug))
                    .col(string(Articles::Title))
                    .col(text(Articles::Description))
                    .col(text(Articles::Body))
                    .col(big_integer(Articles::AuthorId))
                    .col(timestamp_with_time_zone(Articles::CreatedAt))
                    .col(timestamp_with_time_zone(Articles::UpdatedAt))
                    .foreign_key(&mut cascade(
                        "articles_author_fk",
                        (Articles::Table, Articles::AuthorId),
                        (Users::Table, Users::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("articles_slug_key", Articles::Table, &["slug"], true))
            .await?;
        // Lists are newest first, globally or per author.
        manager
            .create_index(index(
                "articles_created_idx",
                Articles::Table,
                &["created_at", "id"],
                false,
            ))
            .await?;
        manager
            .create_index(index(
                "articles_author_created_idx",
                Articles::Table,
                &["author_id", "created_at"],
                false,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Tags::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Tags::Id))
                    .col(string(Tags::Name))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("tags_name_key", Tags::Table, &["name"], true))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ArticleTags::Table)
                    .if_not_exists()
                    .col(big_integer(ArticleTags::ArticleId))
                    .col(big_integer(ArticleTags::TagId))
                    .primary_key(
                        Index::create()
                            .col(ArticleTags::ArticleId)
                            .col(ArticleTags::TagId),
                    )
                    .foreign_key(&mut cascade(
                        "article_tags_article_fk",
                        (ArticleTags::Table, ArticleTags::ArticleId),
                        (Articles::Table, Articles::Id),
                    ))
                    .foreign_key(&mut cascade(
                        "article_tags_tag_fk",
                        (ArticleTags::Table, ArticleTags::TagId),
                        (Tags::Table, Tags::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "article_tags_tag_idx",
                ArticleTags::Table,
                &["tag_id"],
                false,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Favorites::Table)
                    .if_not_exists()
                    .col(big_integer(Favorites::UserId))
                    .col(big_integer(Favorites::ArticleId))
                    .col(timestamp_with_time_zone(Favorites::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(Favorites::UserId)
                            .col(Favorites::ArticleId),
                    )
                    .foreign_key(&mut cascade(
                        "favorites_user_fk",
                        (Favorites::Table, Favorites::UserId),
                        (Users::Table, Users::Id),
                    ))
                    .foreign_key(&mut cascade(
                        "favorites_article_fk",
                        (Favorites::Table, Favorites::ArticleId),
                        (Articles::Table, Articles::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "favorites_article_idx",
                Favorites::Table,
                &["article_id"],
                false,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Comments::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Comments::Id))
                    .col(big_integer(Comments::ArticleId))
                    .col(big_integer(Comments::AuthorId))
                    .col(text(Comments::Body))
                    .col(timestamp_with_time_zone(Comments::CreatedAt))
                    .col(timestamp_with_time_zone(Comments::UpdatedAt))
                    .foreign_key(&mut cascade(
                        "comments_article_fk",
                        (Comments::Table, Comments::ArticleId),
                        (Articles::Table, Articles::Id),
                    ))
                    .foreign_key(&mut cascade(
                        "comments_author_fk",
                        (Comments::Table, Comments::AuthorId),
                        (Users::Table, Users::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "comments_article_idx",
                Comments::Table,
                &["article_id", "created_at"],
                false,
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "comments",
            "favorites",
            "article_tags",
            "tags",
            "articles",
            "follows",
        ] {
            manager
                .drop_table(
                    Table::drop()
                        .table(Alias::new(table))
                        .if_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
