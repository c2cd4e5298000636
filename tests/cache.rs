//! The read cache (tag list, list totals): a write is visible at once on the server that
//! took it, and — on Postgres, through LISTEN/NOTIFY — on every other replica of the same
//! database; hits and misses are counted in /metrics.

mod common;

use common::{Rest, TestDb, TestServer, unique};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn tags(rest: &Rest) -> Vec<String> {
    let (status, body) = rest.get("/api/tags", None).await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_value(body["tags"].clone()).expect("tags")
}

async fn publish(rest: &Rest, token: &str, tag: &str) {
    let (status, body) = rest
        .post(
            "/api/articles",
            Some(token),
            json!({"article": {"title": unique("Cached"), "description": "d", "body": "b", "tagList": [tag]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
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
    // Reads without writes in between are hits.
    tags(&rest).await;
    tags(&rest).await;
    rest.get("/api/articles", None).await;

    let metrics = server.http().get(server.url("/metrics")).send().await;
    let metrics = metrics.expect("metrics").text().await.expect("text");
    assert!(lookups(&metrics, "tags", "hit") >= 1.0, "{metrics}");
    assert!(lookups(&metrics, "tags", "miss") >= 1.0, "{metrics}");
    assert!(lookups(&metrics, "totals", "miss") >= 1.0, "{metrics}");
    assert!(lookups(&metrics, "totals", "hit") >= 1.0, "{metrics}");

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
}
