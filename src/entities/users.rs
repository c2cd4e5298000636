use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub email: String,
    pub username: String,
    pub password_hash: String,
    pub bio: Option<String>,
    pub image: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// `conduit_migrations::skeleton::username_skeleton` of the username; unique.
    pub username_skeleton: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// `column` equals `value` ignoring case, folded by the database's `lower()` on both
/// sides: the expression the unique indexes are built on, so lookups agree with them and
/// Postgres can use them.
pub fn same_name(column: Column, value: &str) -> sea_orm::sea_query::Expr {
    use sea_orm::sea_query::{Expr, ExprTrait, Func};
    Expr::expr(Func::lower(Expr::col((Entity, column)))).eq(Func::lower(Expr::val(value)))
}
