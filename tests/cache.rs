//! The read cache (article reads, tag list, list totals): a write is visible at once on
//! the server that took it, and — on Postgres, through LISTEN/NOTIFY — on every other
//! replica of the same database; one viewer's flags never reach another; hits and misses
//! are counted in /metrics.

mod common;

use common::{Grpc, Rest, TestDb, TestServer, grpc_request, unique};
use conduit::proto::conduit::v1::{self as pb, article_service_client::ArticleServiceClient};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn tags(rest: &Rest) -> Vec<String> {
    let (status, body) = rest.get("/api/tags", None).await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_value(body["tags"].clone()).expect("tags")
}

async fn publish(rest: &Rest, token: &str, tag: &str) {
    rest.publish(token, &unique("Cached"), &[tag]).await;
}

fn lookups(metrics: &str, cache: &str, result: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("conduit_cache_lookups_total{")
                && l.contains(&format!("cache=\"{cache}\""))
                && l.contains(&format!("result=\"{result}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_invalidate_the_cache_here_and_on_other_replicas() {
    let db = TestDb::new().await;
    let replica_db = db.is_postgres().then(|| db.share());
    let server = TestServer::start_on(db, &[]).await;
    let rest = Rest::new(&server);
    let token = rest.register(&unique("cacher")).await;

    // Same process: the write's own commit invalidates.
    let first = unique("first");
    assert!(!tags(&rest).await.contains(&first));
    publish(&rest, &token, &first).await;
    assert!(
        tags(&rest).await.contains(&first),
        "a write is seen at once"
    );
    let (_, listed) = rest.get("/api/articles", None).await;
    assert_eq!(listed["articlesCount"], 1);
    publish(&rest, &token, &first).await;
    let (_, listed) = rest.get("/api/articles", None).await;
    assert_eq!(listed["articlesCount"], 2, "the cached total moved on");
    // Reads without writes in between are hits; another page of the same list is a new
    // answer but the same total.
    tags(&rest).await;
    tags(&rest).await;
    rest.get("/api/articles", None).await;
    let (_, second) = rest.get("/api/articles?offset=1", None).await;
    assert_eq!(second["articlesCount"], 2);

    let metrics = server.metrics().await;
    assert!(lookups(&metrics, "tags", "hit") >= 1.0, "{metrics}");
    assert!(lookups(&metrics, "tags", "miss") >= 1.0, "{metrics}");
    assert!(lookups(&metrics, "total", "miss") >= 1.0, "{metrics}");
    assert!(lookups(&metrics, "total", "hit") >= 1.0, "{metrics}");
    assert!(lookups(&metrics, "window", "hit") >= 1.0, "{metrics}");
    assert!(lookups(&metrics, "window", "miss") >= 1.0, "{metrics}");
    assert!(lookups(&metrics, "article", "hit") >= 1.0, "{metrics}");

    // Another replica of the same Postgres database, writing.
    let Some(replica_db) = replica_db else {
        eprintln!("cross-replica invalidation is Postgres-only (SQLite is one process)");
        return;
    };
    let replica = TestServer::start_on(replica_db, &[]).await;
    let replica_rest = Rest::new(&replica);
    // Both have the current list cached.
    let (_, here) = rest.get("/api/articles", None).await;
    assert_eq!(here["articlesCount"], 2);
    tags(&rest).await;
    let elsewhere = unique("elsewhere");
    publish(&replica_rest, &token, &elsewhere).await;
    // The notification travels through Postgres; allow it a bounded number of polls (a
    // correctness check, not a timing assertion: without invalidation this never passes).
    let mut seen: Option<(Vec<String>, Value)> = None;
    for _ in 0..200 {
        let listed = tags(&rest).await;
        let (_, page) = rest.get("/api/articles", None).await;
        if listed.contains(&elsewhere) && page["articlesCount"] == 3 {
            seen = Some((listed, page["articlesCount"].clone()));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        seen.is_some(),
        "the first server never saw the replica's write in its cached tag list and total"
    );

    // A cached single article moves on when another replica favorites it.
    let slug = article_slug(&rest, &elsewhere).await;
    let path = format!("/api/articles/{slug}");
    let (_, before) = rest.get(&path, None).await;
    assert_eq!(before["article"]["favoritesCount"], 0);
    let fan = replica_rest.register(&unique("fan")).await;
    replica_rest.favorite(&fan, &slug).await;
    let mut count = Value::Null;
    for _ in 0..200 {
        count = rest.get(&path, None).await.1["article"]["favoritesCount"].clone();
        if count == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(
        count, 1,
        "a cached article never saw another replica's favorite"
    );
}

async fn article_slug(rest: &Rest, tag: &str) -> String {
    let (_, page) = rest.get(&format!("/api/articles?tag={tag}"), None).await;
    page["articles"][0]["slug"]
        .as_str()
        .expect("an article with the tag")
        .to_string()
}

#[tokio::test]
async fn cached_reads_are_per_viewer_and_follow_writes() {
    let server = TestServer::start().await;
    let rest = Rest::new(&server);
    let author = rest.register(&unique("writer")).await;
    let fan = rest.register(&unique("fan")).await;
    let other = rest.register(&unique("other")).await;
    let tag = unique("viewed");
    publish(&rest, &author, &tag).await;
    let slug = article_slug(&rest, &tag).await;
    let path = format!("/api/articles/{slug}");
    let list = format!("/api/articles?tag={tag}");

    // Everyone's view is cached once read ...
    for token in [None, Some(&fan), Some(&other)] {
        let token = token.map(String::as_str);
        for _ in 0..2 {
            let (status, body) = rest.get(&path, token).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body["article"]["favorited"], false);
            assert_eq!(body["article"]["favoritesCount"], 0);
            let (_, page) = rest.get(&list, token).await;
            assert_eq!(page["articles"][0]["favorited"], false);
        }
    }
    // ... and a write moves every view on: the fan's own flag and everyone's count, and
    // the fan's flag stays the fan's.
    rest.favorite(&fan, &slug).await;
    for (token, favorited) in [(None, false), (Some(&fan), true), (Some(&other), false)] {
        let token = token.map(String::as_str);
        for _ in 0..2 {
            let (_, body) = rest.get(&path, token).await;
            assert_eq!(body["article"]["favorited"], favorited, "{token:?}");
            assert_eq!(body["article"]["favoritesCount"], 1);
            let (_, page) = rest.get(&list, token).await;
            assert_eq!(page["articles"][0]["favorited"], favorited, "{token:?}");
            assert_eq!(page["articles"][0]["favoritesCount"], 1);
        }
    }
    // Edits and deletes are seen at once.
    let (status, _) = rest
        .put(
            &path,
            Some(&author),
            json!({"article": {"description": "edited"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        rest.get(&path, None).await.1["article"]["description"],
        "edited"
    );
    let (status, _) = rest.delete(&path, Some(&author)).await;
    assert!(status.is_success());
    assert_eq!(rest.get(&path, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(rest.get(&list, None).await.1["articlesCount"], 0);
}

/// The article a tag's list shows first, as `token`'s user sees it over REST and over gRPC
/// (read twice each: the second answer is written from what the first kept).
async fn listed_both_ways(
    rest: &Rest,
    grpc: &Grpc,
    tag: &str,
    token: Option<&str>,
) -> (Value, pb::Article) {
    let path = format!("/api/articles?tag={tag}");
    let mut answers = Vec::new();
    for _ in 0..2 {
        let (status, page) = rest.get(&path, token).await;
        assert_eq!(status, StatusCode::OK);
        let request = pb::ListArticlesRequest {
            tag: Some(tag.into()),
            ..Default::default()
        };
        let listed = ArticleServiceClient::new(grpc.channel())
            .list_articles(grpc_request(request, token))
            .await
            .expect("ListArticles")
            .into_inner();
        answers.push((page["articles"][0].clone(), listed.articles[0].clone()));
    }
    assert_eq!(
        answers[0], answers[1],
        "a kept answer is the one first written"
    );
    answers.remove(0)
}

/// Lists are answered from encodings kept with the page (JSON and protobuf), with the
/// viewer's flags written in: every write the page shows moves both encodings on.
#[tokio::test]
async fn kept_list_encodings_follow_writes_on_both_protocols() {
    let server = TestServer::start().await;
    let (rest, grpc) = (Rest::new(&server), Grpc::new(&server).await);
    let author_name = unique("penned");
    let author = rest.register(&author_name).await;
    let fan = rest.register(&unique("reader")).await;
    let tag = unique("encoded");
    publish(&rest, &author, &tag).await;
    let slug = article_slug(&rest, &tag).await;
    let seen = |(json, message): &(Value, pb::Article)| {
        let author = message.author.clone().unwrap_or_default();
        assert_eq!(json["slug"], message.slug.as_str());
        assert_eq!(json["description"], message.description.as_str());
        assert_eq!(json["favoritesCount"], message.favorites_count);
        assert_eq!(json["favorited"], message.favorited);
        assert_eq!(json["author"]["following"], author.following);
        assert_eq!(json["author"]["bio"], json!(author.bio));
        (
            message.description.clone(),
            message.favorites_count,
            message.favorited,
            author.following,
            author.bio,
        )
    };

    let anyone = listed_both_ways(&rest, &grpc, &tag, None).await;
    let before = seen(&anyone);
    assert_eq!(before, ("d".into(), 0, false, false, None));
    assert_eq!(
        seen(&listed_both_ways(&rest, &grpc, &tag, Some(&fan)).await),
        before
    );

    rest.favorite(&fan, &slug).await;
    rest.follow(&fan, &author_name).await;
    let (status, _) = rest
        .put(
            &format!("/api/articles/{slug}"),
            Some(&author),
            json!({"article": {"description": "edited"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    rest.update_user(&author, json!({"bio": "rewritten"})).await;

    let for_fan = seen(&listed_both_ways(&rest, &grpc, &tag, Some(&fan)).await);
    let bio = Some("rewritten".to_string());
    assert_eq!(for_fan, ("edited".into(), 1, true, true, bio.clone()));
    let for_anyone = seen(&listed_both_ways(&rest, &grpc, &tag, None).await);
    assert_eq!(for_anyone, ("edited".into(), 1, false, false, bio));
}

#[tokio::test]
async fn with_the_cache_off_every_read_is_answered_from_the_database() {
    let server = TestServer::start_with(&[("CONDUIT__CACHE__MAX_BYTES", "0")]).await;
    let rest = Rest::new(&server);
    let author_name = unique("author");
    let author = rest.register(&author_name).await;
    let reader = rest.register(&unique("reader")).await;
    let tag = unique("uncached");
    publish(&rest, &author, &tag).await;
    publish(&rest, &author, &tag).await;
    let slug = article_slug(&rest, &tag).await;
    rest.follow(&reader, &author_name).await;
    rest.favorite(&reader, &slug).await;

    let (_, feed) = rest.get("/api/articles/feed", Some(&reader)).await;
    assert_eq!(feed["articlesCount"], 2, "{feed}");
    assert_eq!(feed["articles"][0]["author"]["following"], true);
    let (_, listed) = rest
        .get(&format!("/api/articles?tag={tag}&offset=5"), None)
        .await;
    assert_eq!(
        listed["articlesCount"], 2,
        "a page past the end still counts"
    );
    let (_, favorited) = rest
        .get(
            &format!("/api/articles?favorited={}", "nobody-at-all"),
            None,
        )
        .await;
    assert_eq!(favorited["articlesCount"], 0);
    let (_, one) = rest
        .get(&format!("/api/articles/{slug}"), Some(&reader))
        .await;
    assert_eq!(one["article"]["favorited"], true, "{one}");
    assert_eq!(one["article"]["favoritesCount"], 1);
    assert!(tags(&rest).await.contains(&tag));
    let metrics = server.metrics().await;
    assert_eq!(
        lookups(&metrics, "window", "hit") + lookups(&metrics, "article", "hit"),
        0.0,
        "nothing served from memory"
    );
}
