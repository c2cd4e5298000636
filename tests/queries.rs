//! Every article read is one SQL statement whatever the page size — no N+1, no
//! transaction round trips — and comment lists a fixed number.
//! In-process, because counting statements needs the connection's metric hook; the
//! services under test are the ones both adapters call.

mod common;

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use common::TestDb;
use conduit::{
    auth::Principal,
    auth::sessions::Client,
    config::{Settings, Sources},
    db,
    modules::{
        articles::service::{ArticleFilter, ArticleService, NewArticle},
        comments::service::CommentService,
        profiles::service::ProfileService,
        users::service::{Registration, UserService},
    },
    pagination::{PageQuery, PageRequest},
    readiness::Readiness,
    state::AppState,
};

struct Counted {
    state: AppState,
    statements: Arc<AtomicUsize>,
}

impl Counted {
    async fn new(db: &TestDb) -> Counted {
        let settings = Settings::load(Sources {
            config_dir: Path::new("/nonexistent"),
            app_env: None,
            env: [("CONDUIT__DATABASE__URL".to_string(), db.url.clone())].into(),
        })
        .expect("settings");
        let mut conn = db::connect(&settings.database).await.expect("connect");
        db::migrate(&conn, &settings.database)
            .await
            .expect("migrate");
        let statements = Arc::new(AtomicUsize::new(0));
        let counter = statements.clone();
        conn.set_metric_callback(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        Counted {
            state: AppState::new(Arc::new(settings), conn, Readiness::new()),
            statements,
        }
    }

    /// Statements `f` runs.
    async fn count<F: Future>(&self, f: F) -> (usize, F::Output) {
        let before = self.statements.load(Ordering::SeqCst);
        let out = f.await;
        (self.statements.load(Ordering::SeqCst) - before, out)
    }
}

async fn user(state: &AppState, name: &str) -> Principal {
    let users = UserService::new(state);
    users
        .register(
            Registration {
                username: name.into(),
                email: format!("{name}@example.com"),
                password: "password123".into(),
            },
            Client::default(),
        )
        .await
        .expect("register");
    // The token is what a client would send; resolve it the way the auth layer does.
    let token = users
        .login(
            conduit::modules::users::service::Credentials {
                email: format!("{name}@example.com"),
                password: "password123".into(),
                otp: None,
            },
            Client::default(),
        )
        .await
        .expect("login")
        .token;
    let verified = state.tokens.verify(&token).expect("valid token");
    Principal {
        user_id: verified.user_id,
        session_id: verified.session_id,
        session_version: verified.session_version,
        session_ends: chrono::Utc::now() + chrono::Duration::days(1),
    }
}

#[tokio::test]
async fn list_queries_do_not_grow_with_the_page() {
    let db = TestDb::new().await;
    let counted = Counted::new(&db).await;
    let state = &counted.state;
    let articles = ArticleService::new(state);
    let comments = CommentService::new(state);

    let reader = user(state, "reader").await;
    let mut authors = Vec::new();
    for i in 0..4 {
        let author = user(state, &format!("author{i}")).await;
        ProfileService::new(state)
            .follow(reader, &format!("author{i}"))
            .await
            .expect("follow");
        authors.push(author);
    }
    let mut slugs = Vec::new();
    for i in 0..24 {
        let article = articles
            .create(
                authors[i % authors.len()],
                NewArticle {
                    title: format!("Article {i}"),
                    description: "d".into(),
                    body: "b".into(),
                    tag_list: vec!["common".into(), format!("t{}", i % 3), format!("u{i}")],
                },
            )
            .await
            .expect("create");
        if i % 2 == 0 {
            articles
                .favorite(reader, &article.slug)
                .await
                .expect("favorite");
        }
        slugs.push(article.slug);
    }
    for i in 0..12 {
        comments
            .add(
                authors[i % authors.len()],
                &slugs[0],
                format!("comment {i}"),
            )
            .await
            .expect("comment");
    }
    comments
        .add(authors[0], &slugs[1], "lonely".into())
        .await
        .expect("comment");

    let page = |limit| PageRequest {
        limit: Some(limit),
        offset: None,
    };
    // A cold page is one statement — its rows with authors, tags, counts and the total
    // — whatever its size; it also fills the parts later pages are composed from.
    let (small, one) = counted
        .count(articles.list(None, ArticleFilter::default(), page(1)))
        .await;
    let (large, many) = counted
        .count(articles.list(None, ArticleFilter::default(), page(24)))
        .await;
    assert_eq!(
        (
            one.expect("list").articles.len(),
            many.expect("list").articles.len()
        ),
        (1, 24)
    );
    assert_eq!((small, large), (1, 1), "a page, whatever its size");
    // A viewer's flags come from their favourite and follow sets: one statement the first
    // time, none after.
    let (first, _) = counted
        .count(articles.list(Some(reader), ArticleFilter::default(), page(24)))
        .await;
    let (again, listed) = counted
        .count(articles.list(Some(reader), ArticleFilter::default(), page(24)))
        .await;
    assert_eq!((first, again), (1, 0), "the viewer's sets, once");
    let listed = listed.expect("list").articles.into_views();
    assert_eq!(
        listed.iter().filter(|a| a.favorited).count(),
        12,
        "flags from the viewer's set"
    );
    assert!(listed.iter().all(|a| a.author.following));
    let filtered = ArticleFilter {
        tag: Some("common".into()),
        ..Default::default()
    };
    let (tagged, _) = counted
        .count(articles.list(Some(reader), filtered, page(24)))
        .await;
    assert_eq!(tagged, 1, "a filter is a subquery, not extra statements");

    let (feed_small, _) = counted.count(articles.feed(reader, page(1))).await;
    let (feed_large, feed) = counted.count(articles.feed(reader, page(24))).await;
    assert_eq!(feed.expect("feed").articles.len(), 24);
    assert_eq!((feed_small, feed_large), (1, 1));

    let (cold, article) = counted.count(articles.get(None, &slugs[0])).await;
    assert_eq!(article.expect("get").tag_list.len(), 3);
    assert_eq!(cold, 1, "an article with everything it shows");
    let (warm, article) = counted.count(articles.get(Some(reader), &slugs[0])).await;
    assert!(article.expect("get").favorited);
    assert_eq!(warm, 0, "its parts and the viewer's sets are kept");
    for viewer in [None, Some(reader)] {
        let query = |page_token: String| PageQuery {
            page_size: 10,
            page_token,
        };
        let (first, page) = counted
            .count(articles.list_page(viewer, ArticleFilter::default(), query(String::new())))
            .await;
        let page = page.expect("page");
        let (second, _) = counted
            .count(articles.list_page(
                viewer,
                ArticleFilter::default(),
                query(page.next_page_token),
            ))
            .await;
        let expected = if viewer.is_none() { (1, 1) } else { (0, 0) };
        assert_eq!((first, second), expected, "keyset pages");
    }

    // A favourite invalidates one count and the viewer's set, nothing else: the page is
    // composed again from kept parts plus that one count and that set.
    let fan = user(state, "fan").await;
    articles.favorite(fan, &slugs[23]).await.expect("favorite");
    let (after, listed) = counted
        .count(articles.list(None, ArticleFilter::default(), page(24)))
        .await;
    let listed = listed.expect("list").articles.into_views();
    assert_eq!(after, 1, "one article's parts");
    assert_eq!(listed[0].favorites_count, 1, "{:?}", listed[0]);
    let (steady, _) = counted
        .count(articles.list(Some(reader), ArticleFilter::default(), page(24)))
        .await;
    assert_eq!(steady, 0, "the reader's set did not change");

    // A page past the end has no row to carry the total: one more statement counts it
    // (after the author's name is resolved), and the next time it is kept.
    let by_author = || ArticleFilter {
        author: Some("author0".into()),
        ..Default::default()
    };
    let beyond = || PageRequest {
        limit: Some(10),
        offset: Some(1000),
    };
    let (past_end, page) = counted
        .count(articles.list(None, by_author(), beyond()))
        .await;
    let page = page.expect("list");
    assert_eq!((page.articles.len(), page.total, past_end), (0, 6, 3));
    let further = || PageRequest {
        limit: Some(10),
        offset: Some(2000),
    };
    let (again, page) = counted
        .count(articles.list(None, by_author(), further()))
        .await;
    assert_eq!(
        (page.expect("list").total, again),
        (6, 1),
        "another page of the list: its total kept"
    );
    // The same read again, with no write in between, is answered from memory.
    let (repeated, page) = counted
        .count(articles.list(None, by_author(), further()))
        .await;
    assert_eq!((page.expect("list").total, repeated), (6, 0));
    let (repeated, article) = counted.count(articles.get(None, &slugs[0])).await;
    assert_eq!(article.expect("get").tag_list.len(), 3);
    assert_eq!(repeated, 0, "a cached article");

    let (few, one) = counted
        .count(comments.list(Some(reader), &slugs[1], Default::default()))
        .await;
    let (lots, twelve) = counted
        .count(comments.list(Some(reader), &slugs[0], Default::default()))
        .await;
    assert_eq!(
        (one.expect("list").len(), twelve.expect("list").len()),
        (1, 12)
    );
    assert_eq!(
        few, lots,
        "comment list statements: {few} for 1, {lots} for 12"
    );
}
