//! `ListArticlesResponse` and `FeedArticlesResponse` (one shape: `repeated Article
//! articles = 1; string next_page_token = 3`), in place of the code prost would generate
//! (build.rs maps both here with `extern_path`). Decoded and built field by field it is
//! that code's equal; the server may instead hand it `articles` already encoded
//! (`ArticlesResponse::encoded`), which it writes as they are: a kept page's articles,
//! encoded once, with each viewer's flags spliced in.

use std::{fmt, sync::Arc};

use prost::{
    DecodeError, Message,
    bytes::{Buf, BufMut},
    encoding::{self, DecodeContext, WireType},
};

use super::conduit::v1::Article;

/// The `articles` field, encoded: every element with its key and length, as
/// `encoding::message::encode_repeated(1, …)` would write it.
pub trait EncodedArticles: Send + Sync + 'static {
    fn encoded_len(&self) -> usize;
    fn encode(&self, buf: &mut dyn BufMut);
}

#[derive(Clone, Default)]
pub struct ArticlesResponse {
    pub articles: Vec<Article>,
    /// Empty on the last page.
    pub next_page_token: String,
    /// When set, what is written for `articles` (which is then empty).
    encoded: Option<Arc<dyn EncodedArticles>>,
}

const ARTICLES: u32 = 1;
const NEXT_PAGE_TOKEN: u32 = 3;

impl ArticlesResponse {
    pub fn new(articles: Vec<Article>, next_page_token: String) -> Self {
        Self {
            articles,
            next_page_token,
            encoded: None,
        }
    }

    pub fn encoded(articles: impl EncodedArticles, next_page_token: String) -> Self {
        Self {
            articles: Vec::new(),
            next_page_token,
            encoded: Some(Arc::new(articles)),
        }
    }

    fn articles_len(&self) -> usize {
        match &self.encoded {
            Some(encoded) => encoded.encoded_len(),
            None => encoding::message::encoded_len_repeated(ARTICLES, &self.articles),
        }
    }
}

impl Message for ArticlesResponse {
    fn encode_raw(&self, mut buf: &mut impl BufMut) {
        match &self.encoded {
            Some(encoded) => encoded.encode(&mut buf),
            None => encoding::message::encode_repeated(ARTICLES, &self.articles, buf),
        }
        if !self.next_page_token.is_empty() {
            encoding::string::encode(NEXT_PAGE_TOKEN, &self.next_page_token, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        const NAME: &str = "ArticlesResponse";
        match tag {
            ARTICLES => encoding::message::merge_repeated(wire_type, &mut self.articles, buf, ctx)
                .map_err(|mut e| {
                    e.push(NAME, "articles");
                    e
                }),
            NEXT_PAGE_TOKEN => {
                encoding::string::merge(wire_type, &mut self.next_page_token, buf, ctx).map_err(
                    |mut e| {
                        e.push(NAME, "next_page_token");
                        e
                    },
                )
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        self.articles_len()
            + if self.next_page_token.is_empty() {
                0
            } else {
                encoding::string::encoded_len(NEXT_PAGE_TOKEN, &self.next_page_token)
            }
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Equal when they encode alike: an encoded answer equals the decoded one it stands for.
impl PartialEq for ArticlesResponse {
    fn eq(&self, other: &Self) -> bool {
        match (&self.encoded, &other.encoded) {
            (None, None) => {
                self.articles == other.articles && self.next_page_token == other.next_page_token
            }
            _ => self.encode_to_vec() == other.encode_to_vec(),
        }
    }
}

impl fmt::Debug for ArticlesResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("ArticlesResponse");
        match &self.encoded {
            Some(encoded) => {
                debug.field("articles", &format_args!("{} bytes", encoded.encoded_len()))
            }
            None => debug.field("articles", &self.articles),
        };
        debug
            .field("next_page_token", &self.next_page_token)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::conduit::v1::Profile;

    fn article(slug: &str) -> Article {
        Article {
            slug: slug.into(),
            title: "T".into(),
            favorites_count: 3,
            author: Some(Profile {
                username: "jake".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Encodes what it was built from the way prost would, through the other path.
    struct Encoded(Vec<Article>);

    impl EncodedArticles for Encoded {
        fn encoded_len(&self) -> usize {
            encoding::message::encoded_len_repeated(ARTICLES, &self.0)
        }
        fn encode(&self, mut buf: &mut dyn BufMut) {
            encoding::message::encode_repeated(ARTICLES, &self.0, &mut buf);
        }
    }

    #[test]
    fn decodes_what_it_encodes_either_way() {
        for token in ["", "next"] {
            let decoded = ArticlesResponse {
                articles: vec![article("a"), article("b")],
                next_page_token: token.into(),
                encoded: None,
            };
            let bytes = decoded.encode_to_vec();
            assert_eq!(decoded.encoded_len(), bytes.len());
            assert_eq!(
                ArticlesResponse::decode(bytes.as_slice()),
                Ok(decoded.clone())
            );

            let encoded =
                ArticlesResponse::encoded(Encoded(decoded.articles.clone()), token.into());
            assert_eq!(encoded.encode_to_vec(), bytes);
            assert_eq!(encoded.encoded_len(), bytes.len());
            assert_eq!(encoded, decoded);
        }
    }

    #[test]
    fn skips_fields_it_does_not_know() {
        let mut bytes = ArticlesResponse {
            articles: vec![article("a")],
            ..Default::default()
        }
        .encode_to_vec();
        // The reserved `articles_count = 2`, as an older server would send it.
        encoding::int64::encode(2, &7, &mut bytes);
        let decoded = ArticlesResponse::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(decoded.articles, vec![article("a")]);
    }
}
