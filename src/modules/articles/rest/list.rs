//! A page of articles as RealWorld JSON (`MultipleArticlesResponse`), written from each
//! article's JSON kept with the page (`ArticleList::render`) with the viewer's two flags
//! written into it: the values of `"favorited":` and of the author's `"following":`. The
//! bytes are those serde writes for the same answer (the tests hold them equal).

use std::io::Write;

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

use super::ArticleSummary;
use crate::{
    error::{AppError, AppResult},
    modules::articles::service::{ArticleList, ArticlePage, ArticleView, Flags, Rendered},
};

/// One article's JSON as anyone sees it, with where its two `false` flags are.
struct SummaryJson {
    json: Box<[u8]>,
    favorited_at: usize,
    following_at: usize,
}

const FALSE: &[u8] = b"false";

impl SummaryJson {
    /// `None` only if serde's JSON lacked either key: it cannot, as a key is the only
    /// place an unescaped `"` may start `"favorited":` (inside a string every `"` is
    /// escaped) and each key occurs once.
    fn new(view: &ArticleView) -> Option<Self> {
        let json = serde_json::to_vec(&ArticleSummary::from(view.clone())).ok()?;
        let favorited_at = value_of(&json, b"\"favorited\":")?;
        // The author (and its `following`) comes after `favorited`: `write` relies on it.
        let following_at = favorited_at + value_of(&json[favorited_at..], b"\"following\":")?;
        Some(Self {
            json: json.into_boxed_slice(),
            favorited_at,
            following_at,
        })
    }

    fn write(&self, flags: Flags, out: &mut Vec<u8>) {
        let json = &self.json[..];
        out.extend_from_slice(&json[..self.favorited_at]);
        out.extend_from_slice(flag(flags.favorited));
        out.extend_from_slice(&json[self.favorited_at + FALSE.len()..self.following_at]);
        out.extend_from_slice(flag(flags.following));
        out.extend_from_slice(&json[self.following_at + FALSE.len()..]);
    }
}

/// Where the `false` after `key` starts.
fn value_of(json: &[u8], key: &[u8]) -> Option<usize> {
    let at = json.windows(key.len()).position(|w| w == key)? + key.len();
    json[at..].starts_with(FALSE).then_some(at)
}

fn flag(on: bool) -> &'static [u8] {
    if on { b"true" } else { FALSE }
}

/// A page's articles as JSON, kept with the page; `None` if one could not be made.
struct PageJson(Option<KeptJson>);

struct KeptJson {
    articles: Vec<SummaryJson>,
    /// `{"articles":[…]` as anyone sees it (every flag false): the answer to every viewer
    /// who sees no flag set (anyone signed out, most who are signed in) in one copy.
    as_anyone: Box<[u8]>,
}

impl KeptJson {
    fn new(views: &[ArticleView]) -> Option<Self> {
        let articles = views
            .iter()
            .map(SummaryJson::new)
            .collect::<Option<Vec<_>>>()?;
        let unflagged = vec![Flags::default(); articles.len()];
        let as_anyone = write_articles(&articles, &unflagged).into_boxed_slice();
        Some(Self {
            articles,
            as_anyone,
        })
    }
}

/// `{"articles":[…]` with these flags, with room for the rest of the answer.
fn write_articles(articles: &[SummaryJson], flags: &[Flags]) -> Vec<u8> {
    let size: usize = articles.iter().map(|a| a.json.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 48);
    out.extend_from_slice(b"{\"articles\":[");
    for (i, (article, &flags)) in articles.iter().zip(flags).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        article.write(flags, &mut out);
    }
    out
}

/// `{"articles":[…],"articlesCount":N}` for this viewer.
pub(crate) struct ArticlesJson {
    rendered: Rendered<PageJson>,
    total: u64,
}

impl ArticlesJson {
    pub(crate) fn new(page: ArticlePage) -> Self {
        Self::of(page.articles, page.total)
    }

    fn of(articles: ArticleList, total: u64) -> Self {
        let rendered = articles.render(|views| PageJson(KeptJson::new(views)));
        Self { rendered, total }
    }

    fn to_bytes(&self) -> AppResult<Vec<u8>> {
        let Some(kept) = &self.rendered.page.0 else {
            return Err(AppError::internal(anyhow::anyhow!(
                "an article's JSON lacks a flag to write"
            )));
        };
        let flags = &self.rendered.flags;
        let mut out = if self.rendered.seen_as_anyone() {
            let mut out = Vec::with_capacity(kept.as_anyone.len() + 32);
            out.extend_from_slice(&kept.as_anyone);
            out
        } else {
            write_articles(&kept.articles, flags)
        };
        // Writing to a Vec cannot fail.
        let _ = write!(out, "],\"articlesCount\":{}}}", self.total);
        Ok(out)
    }
}

impl IntoResponse for ArticlesJson {
    fn into_response(self) -> Response {
        match self.to_bytes() {
            Ok(body) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            Err(error) => error.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::modules::{
        articles::{rest::MultipleArticlesResponse, service::ArticlePage},
        profiles::service::ProfileView,
    };

    fn view(i: usize, favorited: bool, following: bool) -> ArticleView {
        ArticleView {
            slug: format!("how-to-{i}"),
            // What a key looks like, inside strings: escaped, so never taken for one.
            title: format!("\"favorited\":false, \"following\":false {i}"),
            description: "Ever wonder how? \u{1F409} \\ \n".into(),
            body: None,
            tag_list: (0..i).map(|t| format!("\"following\":{t}")).collect(),
            created_at: Utc
                .with_ymd_and_hms(2026, 1, i as u32 + 1, 0, 0, 0)
                .unwrap(),
            updated_at: Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap(),
            favorited,
            favorites_count: i as i64 * 7,
            author: ProfileView {
                username: format!("\"favorited\":false{i}"),
                bio: i.is_multiple_of(2).then(|| "\"following\":false".into()),
                image: None,
                following,
            },
        }
    }

    fn view_as_anyone(mut view: ArticleView) -> ArticleView {
        view.favorited = false;
        view.author.following = false;
        view
    }

    fn views() -> Vec<ArticleView> {
        (0..8).map(|i| view(i, i % 2 == 1, i % 4 >= 2)).collect()
    }

    #[test]
    fn written_answers_are_the_bytes_serde_writes() {
        let unflagged = views().into_iter().map(view_as_anyone).collect::<Vec<_>>();
        for (views, total) in [
            (views(), 8),
            (Vec::new(), 0),
            (views()[..1].to_vec(), 31),
            (unflagged, 8),
        ] {
            let expected = serde_json::to_vec(&MultipleArticlesResponse::from(ArticlePage {
                articles: ArticleList::from_views(views.clone()),
                total,
            }))
            .expect("serialises");
            let written = ArticlesJson::of(ArticleList::from_views(views), total)
                .to_bytes()
                .expect("writes");
            assert_eq!(
                String::from_utf8_lossy(&written),
                String::from_utf8_lossy(&expected)
            );
        }
    }
}
