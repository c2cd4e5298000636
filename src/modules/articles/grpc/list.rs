//! A page of articles as protobuf, written from each article's encoding kept with the page
//! (`ArticleList::render`) with the viewer's two flags spliced in: `favorited` (8) between
//! the fields before it and `favorites_count` (9), `following` (4) at the end of `author`
//! (10, the last field), whose length is written per viewer. The bytes are those prost
//! writes for the same message (the tests hold them equal).

use prost::{
    Message,
    bytes::BufMut,
    encoding::{self, WireType},
};

use crate::modules::articles::service::{ArticleList, ArticleView, Flags, Rendered};
use crate::proto::{ArticlesResponse, EncodedArticles, conduit::v1 as pb};

const ARTICLES: u32 = 1;
const FAVORITED: u32 = 8;
const FAVORITES_COUNT: u32 = 9;
const AUTHOR: u32 = 10;
const FOLLOWING: u32 = 4;

/// A bool field set to true: its key and a one-byte varint (false is not written).
const TRUE_LEN: usize = 2;

/// One article as anyone sees it, in three runs: the fields before `favorited`, then
/// `favorites_count`, then the author's fields without `following`.
struct ArticleBytes {
    bytes: Box<[u8]>,
    /// Where `favorites_count` starts and where the author's fields start.
    count_at: usize,
    author_at: usize,
}

impl ArticleBytes {
    fn new(view: &ArticleView) -> Self {
        let mut article = pb::Article::from(view.clone());
        let mut author = article.author.take().unwrap_or_default();
        // As anyone sees it: the viewer's flags are written per answer.
        article.favorited = false;
        author.following = false;
        let count = std::mem::take(&mut article.favorites_count);
        // Flags are false here, and a false bool, a zero count and a missing author are
        // not written: what is left is the fields before `favorited`.
        let mut bytes = article.encode_to_vec();
        let count_at = bytes.len();
        if count != 0 {
            encoding::int64::encode(FAVORITES_COUNT, &count, &mut bytes);
        }
        let author_at = bytes.len();
        author.encode_raw(&mut bytes);
        Self {
            bytes: bytes.into_boxed_slice(),
            count_at,
            author_at,
        }
    }

    fn author_len(&self, flags: Flags) -> usize {
        self.bytes.len() - self.author_at + if flags.following { TRUE_LEN } else { 0 }
    }

    fn len(&self, flags: Flags) -> usize {
        let author = self.author_len(flags);
        self.author_at
            + if flags.favorited { TRUE_LEN } else { 0 }
            + encoding::key_len(AUTHOR)
            + encoding::encoded_len_varint(author as u64)
            + author
    }

    fn encode(&self, flags: Flags, mut buf: &mut dyn BufMut) {
        let bytes = &self.bytes[..];
        buf.put_slice(&bytes[..self.count_at]);
        if flags.favorited {
            encoding::bool::encode(FAVORITED, &true, &mut buf);
        }
        buf.put_slice(&bytes[self.count_at..self.author_at]);
        encoding::encode_key(AUTHOR, WireType::LengthDelimited, &mut buf);
        encoding::encode_varint(self.author_len(flags) as u64, &mut buf);
        buf.put_slice(&bytes[self.author_at..]);
        if flags.following {
            encoding::bool::encode(FOLLOWING, &true, &mut buf);
        }
    }
}

/// A page's articles as protobuf, kept with the page: each article's runs, and the whole
/// `articles` field as anyone sees it (every flag false), which is the answer to every
/// viewer who sees no flag set (anyone signed out, most who are signed in) in one copy.
struct PageBytes {
    articles: Vec<ArticleBytes>,
    as_anyone: Box<[u8]>,
}

impl PageBytes {
    fn new(views: &[ArticleView]) -> Self {
        let articles: Vec<ArticleBytes> = views.iter().map(ArticleBytes::new).collect();
        let unflagged = vec![Flags::default(); articles.len()];
        let mut as_anyone = Vec::with_capacity(field_len(&articles, &unflagged));
        encode_field(&articles, &unflagged, &mut as_anyone);
        Self {
            articles,
            as_anyone: as_anyone.into_boxed_slice(),
        }
    }
}

/// The length of the `articles` field with these flags.
fn field_len(articles: &[ArticleBytes], flags: &[Flags]) -> usize {
    articles
        .iter()
        .zip(flags)
        .map(|(article, &flags)| {
            let len = article.len(flags);
            encoding::key_len(ARTICLES) + encoding::encoded_len_varint(len as u64) + len
        })
        .sum()
}

/// The `articles` field with these flags: each element with its key and length.
fn encode_field(articles: &[ArticleBytes], flags: &[Flags], mut buf: &mut dyn BufMut) {
    for (article, &flags) in articles.iter().zip(flags) {
        encoding::encode_key(ARTICLES, WireType::LengthDelimited, &mut buf);
        encoding::encode_varint(article.len(flags) as u64, &mut buf);
        article.encode(flags, &mut *buf);
    }
}

/// The `articles` field of one answer: the kept page and this viewer's flags.
struct Spliced {
    rendered: Rendered<PageBytes>,
    len: usize,
    as_anyone: bool,
}

impl EncodedArticles for Spliced {
    fn encoded_len(&self) -> usize {
        self.len
    }

    fn encode(&self, buf: &mut dyn BufMut) {
        let page = &self.rendered.page;
        if self.as_anyone {
            buf.put_slice(&page.as_anyone);
        } else {
            encode_field(&page.articles, &self.rendered.flags, buf);
        }
    }
}

/// The answer to ListArticles or FeedArticles.
pub(super) fn response(articles: ArticleList, next_page_token: String) -> ArticlesResponse {
    let rendered = articles.render(PageBytes::new);
    let as_anyone = rendered.seen_as_anyone();
    let len = if as_anyone {
        rendered.page.as_anyone.len()
    } else {
        field_len(&rendered.page.articles, &rendered.flags)
    };
    ArticlesResponse::encoded(
        Spliced {
            rendered,
            len,
            as_anyone,
        },
        next_page_token,
    )
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::modules::profiles::service::ProfileView;

    fn view(i: usize, flags: Flags) -> ArticleView {
        let long = "x".repeat(200 * i);
        ArticleView {
            slug: format!("how-to-{i}"),
            title: format!("How to \"favorited\":false {long}"),
            description: if i == 2 {
                String::new()
            } else {
                "Ever wonder?".into()
            },
            body: None,
            tag_list: (0..i).map(|t| format!("tag{t}")).collect(),
            created_at: Utc
                .with_ymd_and_hms(2026, 1, i as u32 + 1, 0, 0, 0)
                .unwrap(),
            updated_at: Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap(),
            favorited: flags.favorited,
            favorites_count: [0, 1, 300][i % 3],
            author: ProfileView {
                username: if i == 3 {
                    String::new()
                } else {
                    format!("user{i}")
                },
                bio: i.is_multiple_of(2).then(|| "I work at statefarm".into()),
                image: (i == 1).then(|| "https://example.com/a.png".into()),
                following: flags.following,
            },
        }
    }

    fn views() -> Vec<ArticleView> {
        let flags = [(false, false), (true, false), (false, true), (true, true)];
        (0..8)
            .map(|i| {
                let (favorited, following) = flags[i % 4];
                view(
                    i,
                    Flags {
                        favorited,
                        following,
                    },
                )
            })
            .collect()
    }

    /// The same views as anyone sees them: the page's kept field is the whole answer.
    fn unflagged() -> Vec<ArticleView> {
        views()
            .into_iter()
            .map(|mut view| {
                view.favorited = false;
                view.author.following = false;
                view
            })
            .collect()
    }

    #[test]
    fn spliced_answers_are_the_bytes_prost_writes() {
        for (views, token) in [(views(), ""), (views(), "token"), (unflagged(), "token")] {
            let expected = ArticlesResponse::new(
                views.iter().cloned().map(pb::Article::from).collect(),
                token.into(),
            );
            let spliced = response(ArticleList::from_views(views), token.into());
            assert_eq!(spliced.encoded_len(), expected.encoded_len());
            assert_eq!(spliced.encode_to_vec(), expected.encode_to_vec());
            let decoded =
                ArticlesResponse::decode(spliced.encode_to_vec().as_slice()).expect("decodes");
            assert_eq!(decoded.articles, expected.articles);
        }
    }

    #[test]
    fn an_empty_page_is_empty() {
        let spliced = response(ArticleList::from_views(Vec::new()), String::new());
        assert_eq!(spliced.encode_to_vec(), Vec::<u8>::new());
    }
}
