//! Several replicas as production runs them, black-box on Postgres: three replicas
//! behind PgBouncer in transaction pooling serve the whole REST and gRPC flow; the leased
//! cleanup job runs once per interval across them, follows a changed interval at once,
//! and is taken over within two intervals when its runner is killed.

mod common;

use std::time::{Duration, Instant};

use common::{Grpc, PgBouncer, Rest, TestDb, TestServer, unique};
use conduit::proto::conduit::v1::{
    self as pb, article_service_client::ArticleServiceClient,
    comment_service_client::CommentServiceClient, tag_service_client::TagServiceClient,
};
use reqwest::StatusCode;
use serde_json::json;

/// Three replicas behind PgBouncer (`None` without Postgres); the pooler lives as long
/// as the returned handle.
async fn pooled_replicas(env: &[(&str, &str)]) -> Option<(Vec<TestServer>, PgBouncer)> {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        eprintln!("skipped: replicas need Postgres (CONDUIT_TEST_DATABASE_URL)");
        return None;
    }
    let pooler =
        PgBouncer::start(db.postgres_addr()?).expect("PgBouncer (apt-get install pgbouncer)");
    let via = db.url_via_port(pooler.port)?;
    // Migrated directly, as the migration Job does; replicas only serve.
    let migrated = common::run_cli(&["migrate", "up"], &[], &db.url);
    assert!(migrated.status.success(), "{migrated:?}");
    let mut vars = vec![
        ("CONDUIT__DATABASE__URL", via.as_str()),
        ("CONDUIT__DATABASE__POOLER", "transaction"),
        ("CONDUIT__DATABASE__MIGRATE_ON_START", "false"),
    ];
    vars.extend_from_slice(env);
    let mut servers: Vec<TestServer> = Vec::new();
    let mut owner = Some(db);
    for _ in 0..3 {
        let db = match owner.take() {
            Some(db) => db,
            None => servers[0].db.share(),
        };
        servers.push(TestServer::start_on(db, &vars).await);
    }
    Some((servers, pooler))
}

/// The REST flow a RealWorld client goes through.
async fn rest_flow(server: &TestServer) {
    let rest = Rest::new(server);
    let author_name = unique("ra");
    let author = rest.register(&author_name).await;
    rest.login(&format!("{author_name}@example.com"), "password123")
        .await;
    rest.current_user(&author).await;
    rest.update_user(&author, json!({"bio": "pooled"})).await;
    let tag = unique("pt");
    let slug = rest.publish(&author, &unique("Pooled"), &[&tag]).await;
    let reader = rest.register(&unique("rr")).await;
    rest.follow(&reader, &author_name).await;
    let (_, feed) = rest.get("/api/articles/feed", Some(&reader)).await;
    assert_eq!(feed["articlesCount"], 1, "{feed}");
    let (_, listed) = rest
        .get(&format!("/api/articles?tag={tag}"), Some(&reader))
        .await;
    assert_eq!(listed["articles"][0]["slug"], slug.as_str());
    let favorited = rest.favorite(&reader, &slug).await;
    assert_eq!(favorited["favorited"], true, "{favorited}");
    let comment = rest.comment(&reader, &slug, "through the pooler").await;
    let id = comment["id"].as_i64().expect("id");
    assert_eq!(rest.comments(&slug).await.len(), 1);
    let (_, tags) = rest.get("/api/tags", None).await;
    assert!(tags["tags"].as_array().expect("tags").contains(&json!(tag)));
    let (status, _) = rest
        .delete(
            &format!("/api/articles/{slug}/comments/{id}"),
            Some(&reader),
        )
        .await;
    assert!(status.is_success());
    let (status, _) = rest
        .delete(&format!("/api/articles/{slug}"), Some(&author))
        .await;
    assert!(status.is_success());
    rest.logout(&reader).await;
    let (status, _) = rest.get("/api/user", Some(&reader)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// The same over gRPC.
async fn grpc_flow(server: &TestServer) {
    let grpc = Grpc::new(server).await;
    let token = grpc.register(&unique("ga")).await;
    grpc.current_user(&token).await;
    let slug = grpc
        .publish(&token, &unique("Pooled gRPC"), &["grpc-pooled"])
        .await;
    let mut articles = ArticleServiceClient::new(grpc.channel());
    let page = articles
        .list_articles(pb::ListArticlesRequest {
            tag: Some("grpc-pooled".into()),
            page_size: 5,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(page.articles.iter().any(|a| a.slug == slug));
    assert!(grpc.favorite(&token, &slug).await.favorited);
    grpc.comment(&token, &slug, "over gRPC").await;
    let listed = CommentServiceClient::new(grpc.channel())
        .list_comments(pb::ListCommentsRequest {
            slug: slug.clone(),
            ..Default::default()
        })
        .await
        .expect("comments")
        .into_inner();
    assert_eq!(listed.comments.len(), 1);
    TagServiceClient::new(grpc.channel())
        .list_tags(pb::ListTagsRequest {})
        .await
        .expect("tags");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_behind_pgbouncer_serve_the_whole_flow() {
    let Some((replicas, _pooler)) = pooled_replicas(&[]).await else {
        return;
    };
    for replica in &replicas {
        rest_flow(replica).await;
        grpc_flow(replica).await;
    }
}

/// `conduit_job_runs_total{job_name="cleanup",outcome="ok"}` of one replica.
async fn cleanup_ok(server: &TestServer) -> u64 {
    let text = server.metrics().await;
    text.lines()
        .find(|l| {
            l.starts_with("conduit_job_runs_total{")
                && l.contains("job_name=\"cleanup\"")
                && l.contains("outcome=\"ok\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leased_job_follows_the_interval_and_survives_a_killed_runner() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        eprintln!("skipped: replicas need Postgres (CONDUIT_TEST_DATABASE_URL)");
        return;
    }
    // A replica with the default 10-minute interval runs the job once, then leaves.
    let shared = db.share();
    let first = TestServer::start_on(db, &[]).await;
    let started = Instant::now();
    while cleanup_ok(&first).await == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.terminate();
    // Three replicas configured for 1 s through PgBouncer: due an interval after the last
    // run by *their* interval, not the 10 minutes it was recorded with.
    let pooler = PgBouncer::start(first.db.postgres_addr().expect("addr")).expect("PgBouncer");
    let via = first.db.url_via_port(pooler.port).expect("url");
    let env = [
        ("CONDUIT__DATABASE__URL", via.as_str()),
        ("CONDUIT__DATABASE__POOLER", "transaction"),
        ("CONDUIT__DATABASE__MIGRATE_ON_START", "false"),
        ("CONDUIT__JOBS__CLEANUP_INTERVAL", "1s"),
    ];
    let watched = Instant::now();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(TestServer::start_on(shared.share(), &env).await);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut runs = Vec::new();
    for replica in &replicas {
        runs.push(cleanup_ok(replica).await);
    }
    let total: u64 = runs.iter().sum();
    let elapsed = watched.elapsed().as_secs();
    assert!(total >= 2, "the new interval took effect at once: {runs:?}");
    assert!(
        total <= elapsed + 1,
        "once per interval across replicas: {runs:?} in {elapsed}s"
    );

    // Kill (SIGKILL) the replica that ran last; the others take over within two intervals.
    let mut last = 0;
    let mut seen = runs.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    'find: while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        for (i, replica) in replicas.iter().enumerate() {
            let now = cleanup_ok(replica).await;
            if now > seen[i] {
                last = i;
                seen[i] = now;
                break 'find;
            }
        }
    }
    replicas[last].kill();
    let killed_at = Instant::now();
    let others: Vec<usize> = (0..3).filter(|i| *i != last).collect();
    let before: u64 = {
        let mut sum = 0;
        for i in &others {
            sum += cleanup_ok(&replicas[*i]).await;
        }
        sum
    };
    loop {
        let mut after = 0;
        for i in &others {
            after += cleanup_ok(&replicas[*i]).await;
        }
        if after > before {
            break;
        }
        assert!(
            killed_at.elapsed() <= Duration::from_millis(2_500),
            "not taken over within two intervals ({:?})",
            killed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("taken over {:?} after the kill", killed_at.elapsed());
    drop(pooler);
}
