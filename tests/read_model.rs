//! The read model across replicas, black-box on Postgres: writes reach every replica's
//! cache through the change log within the staleness bound — with the LISTEN wake-ups
//! working, killed, or silent, with transactions committing out of order, and through
//! PgBouncer in transaction pooling; a replica that cannot read the log serves nothing
//! stale; sessions ended on one replica are refused on the others. And, in-process on
//! both databases, the cache's own guarantees: no stale set, one load per key, a write's
//! own answer shows the state it produced.

mod common;

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::{PgBouncer, Rest, TestDb, TestServer, unique};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};

/// `cache.max_staleness`: past it no replica serves what it had cached.
const BOUND: Duration = Duration::from_secs(2);

/// How three replicas reach the database.
#[derive(Clone, Copy, Debug)]
enum Route {
    Direct,
    PgBouncer,
}

struct Replicas {
    servers: Vec<TestServer>,
    _pooler: Option<PgBouncer>,
}

/// Three replicas on one Postgres database (`None` on SQLite, or without PgBouncer).
async fn replicas(route: Route, env: &[(&str, &str)]) -> Option<Replicas> {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        eprintln!("skipped: replicas need Postgres (CONDUIT_TEST_DATABASE_URL)");
        return None;
    }
    let (urls, pooler) = match route {
        Route::Direct => (vec![db.url.clone(); 3], None),
        Route::PgBouncer => {
            let Some(pooler) = PgBouncer::start(db.postgres_addr()?) else {
                panic!("PgBouncer did not start (apt-get install pgbouncer)");
            };
            let via = db.url_via_port(pooler.port)?;
            // Migrated directly, as a migration job would; the replicas only serve.
            let migrated = common::run_cli(&["migrate", "up"], &[], &db.url);
            assert!(migrated.status.success(), "{migrated:?}");
            (vec![via; 3], Some(pooler))
        }
    };
    let mut servers: Vec<TestServer> = Vec::new();
    let mut owner = Some(db);
    for url in urls {
        let mut vars: Vec<(&str, &str)> = vec![("CONDUIT__DATABASE__URL", url.as_str())];
        if matches!(route, Route::PgBouncer) {
            vars.push(("CONDUIT__DATABASE__POOLER", "transaction"));
            vars.push(("CONDUIT__DATABASE__MIGRATE_ON_START", "false"));
        }
        vars.extend_from_slice(env);
        // The first replica owns the database (and drops it at the end).
        let db = match owner.take() {
            Some(db) => db,
            None => servers[0].db.share(),
        };
        servers.push(TestServer::start_on(db, &vars).await);
    }
    Some(Replicas {
        servers,
        _pooler: pooler,
    })
}

async fn article(rest: &Rest, token: &str) -> String {
    rest.publish(token, &unique("Replicated"), &["replicated"])
        .await
}

async fn count_on(rest: &Rest, slug: &str) -> Value {
    let (status, body) = rest.get(&format!("/api/articles/{slug}"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["article"]["favoritesCount"].clone()
}

/// Polls `rest` until the article shows `expected` favourites; how long that took. Panics
/// past the bound plus a poll: a stale answer served past the bound.
async fn seen_within_bound(rest: &Rest, slug: &str, expected: u64) -> Duration {
    let started = Instant::now();
    loop {
        if count_on(rest, slug).await == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() <= BOUND + Duration::from_millis(500),
            "still stale after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes on each replica in turn, and times how soon the others see each write.
async fn writes_reach_every_replica(replicas: &Replicas, rounds: usize) -> Vec<Duration> {
    let rests: Vec<Rest> = replicas.servers.iter().map(Rest::new).collect();
    let author = rests[0].register(&unique("author")).await;
    let fan = rests[0].register(&unique("fan")).await;
    let slug = article(&rests[0], &author).await;
    // Every replica has the article cached before the writes.
    for rest in &rests {
        assert_eq!(count_on(rest, &slug).await, 0);
        assert_eq!(count_on(rest, &slug).await, 0);
    }
    let mut delays = Vec::new();
    for round in 0..rounds {
        let writer = &rests[round % rests.len()];
        let favorite = round % 2 == 0;
        let path = format!("/api/articles/{slug}/favorite");
        let (status, body) = if favorite {
            writer.post(&path, Some(&fan), json!({})).await
        } else {
            writer.delete(&path, Some(&fan)).await
        };
        assert_eq!(status, StatusCode::OK, "{body}");
        let expected = u64::from(favorite);
        // Read your writes: the replica that took it, at once.
        assert_eq!(count_on(writer, &slug).await, expected);
        for (i, reader) in rests.iter().enumerate() {
            if i != round % rests.len() {
                delays.push(seen_within_bound(reader, &slug, expected).await);
            }
        }
    }
    delays
}

fn report(what: &str, mut delays: Vec<Duration>) {
    delays.sort();
    let p = |q: f64| delays[((delays.len() as f64 * q).ceil() as usize).clamp(1, delays.len()) - 1];
    eprintln!(
        "{what}: {} cross-replica reads, p50 {:?}, p99 {:?}, max {:?}",
        delays.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
}

async fn sessions_end_on_every_replica(replicas: &Replicas) {
    let rests: Vec<Rest> = replicas.servers.iter().map(Rest::new).collect();
    let token = rests[0].register(&unique("leaver")).await;
    for rest in &rests {
        assert_eq!(rest.get("/api/user", Some(&token)).await.0, StatusCode::OK);
    }
    rests[0].logout(&token).await;
    for rest in &rests[1..] {
        let started = Instant::now();
        while rest.get("/api/user", Some(&token)).await.0 != StatusCode::UNAUTHORIZED {
            assert!(
                started.elapsed() <= BOUND + Duration::from_millis(500),
                "an ended session still served after {:?}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_logouts_reach_every_replica_within_the_bound() {
    let Some(replicas) = replicas(Route::Direct, &[]).await else {
        return;
    };
    report("direct", writes_reach_every_replica(&replicas, 12).await);
    sessions_end_on_every_replica(&replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgbouncer_in_transaction_mode_by_polling_alone() {
    let Some(replicas) = replicas(Route::PgBouncer, &[]).await else {
        return;
    };
    // The whole REST and gRPC flow works through the pooler.
    let rest = Rest::new(&replicas.servers[1]);
    let token = rest.register(&unique("pooled")).await;
    let slug = article(&rest, &token).await;
    let (status, _) = rest.get("/api/articles?tag=replicated", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    let mut articles =
        conduit::proto::conduit::v1::article_service_client::ArticleServiceClient::new(
            replicas.servers[2].channel().await,
        );
    articles
        .get_article(conduit::proto::conduit::v1::GetArticleRequest { slug })
        .await
        .expect("gRPC through the pooler");
    report("pgbouncer", writes_reach_every_replica(&replicas, 8).await);
    sessions_end_on_every_replica(&replicas).await;
}

/// The backends of the replicas' LISTEN connections.
async fn listeners(admin: &sea_orm::DatabaseConnection, database: &str) -> Vec<i32> {
    let rows = admin
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!(
                "SELECT pid FROM pg_stat_activity WHERE datname = '{database}' AND query LIKE 'LISTEN%'"
            ),
        ))
        .await
        .expect("pg_stat_activity");
    rows.iter()
        .filter_map(|row| row.try_get::<i32>("", "pid").ok())
        .collect()
}

async fn admin(server: &TestServer) -> (sea_orm::DatabaseConnection, String) {
    let url = std::env::var("CONDUIT_TEST_DATABASE_URL").expect("postgres");
    let admin = Database::connect(&url).await.expect("admin");
    (admin, server.db.postgres_name().expect("name").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listener_costs_only_the_wake_ups() {
    let Some(replicas) = replicas(Route::Direct, &[]).await else {
        return;
    };
    let (admin, database) = admin(&replicas.servers[0]).await;
    let mut pids = Vec::new();
    for _ in 0..100 {
        pids = listeners(&admin, &database).await;
        if pids.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pids.len(), 3, "one listener per replica");
    for pid in &pids {
        admin
            .execute_unprepared(&format!("SELECT pg_terminate_backend({pid})"))
            .await
            .expect("terminate");
    }
    report(
        "listeners killed",
        writes_reach_every_replica(&replicas, 6).await,
    );
}

/// Resumes stopped backends however the test ends.
struct Stopped(Vec<i32>);

impl Drop for Stopped {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_listener_costs_only_the_wake_ups() {
    let Some(replicas) = replicas(Route::Direct, &[]).await else {
        return;
    };
    let (admin, database) = admin(&replicas.servers[0]).await;
    let mut pids = Vec::new();
    for _ in 0..100 {
        pids = listeners(&admin, &database).await;
        if pids.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pids.len(), 3, "one listener per replica");
    // As behind a dead NAT: the connections stay open and say nothing.
    let _stopped = Stopped(pids.clone());
    for pid in &pids {
        let stopped = std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(stopped.success());
    }
    report(
        "listeners silent",
        writes_reach_every_replica(&replicas, 6).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_committing_out_of_order_are_both_seen() {
    use sea_orm::TransactionTrait;
    let Some(replicas) = replicas(Route::Direct, &[]).await else {
        return;
    };
    let rest = Rest::new(&replicas.servers[1]);
    let token = rest.register(&unique("order")).await;
    let first = article(&rest, &token).await;
    let second = article(&rest, &token).await;
    let description = |slug: String| {
        let rest = &rest;
        async move {
            rest.get(&format!("/api/articles/{slug}"), None).await.1["article"]["description"]
                .clone()
        }
    };
    assert_eq!(description(first.clone()).await, "d");
    assert_eq!(description(second.clone()).await, "d");
    // Writers from outside, as another replica writes: the older transaction (lower id,
    // lower change row) commits after the younger one.
    let db = Database::connect(&replicas.servers[0].db.url)
        .await
        .expect("connect");
    let edit = |slug: &str, text: &str| {
        format!(
            "UPDATE articles SET description = '{text}' WHERE slug = '{slug}'; \
             INSERT INTO changes (xid, topic, created_at) SELECT pg_current_xact_id()::text::bigint, \
             'article:' || id, clock_timestamp() FROM articles WHERE slug = '{slug}'"
        )
    };
    let older = db.begin().await.expect("begin");
    older
        .execute_unprepared(&edit(&first, "older"))
        .await
        .expect("older write");
    let younger = db.begin().await.expect("begin");
    younger
        .execute_unprepared(&edit(&second, "younger"))
        .await
        .expect("younger write");
    younger.commit().await.expect("younger commits first");
    let started = Instant::now();
    while description(second.clone()).await != "younger" {
        assert!(started.elapsed() <= BOUND + Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The replica has moved past the younger row; the older one commits only now.
    tokio::time::sleep(Duration::from_millis(600)).await;
    older.commit().await.expect("older commits last");
    let started = Instant::now();
    while description(first.clone()).await != "older" {
        assert!(
            started.elapsed() <= BOUND + Duration::from_millis(500),
            "the change committed out of order was skipped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_read_the_log_serves_nothing_stale() {
    let db = TestDb::new().await;
    let Some(target) = db.postgres_addr() else {
        eprintln!("skipped: needs Postgres (CONDUIT_TEST_DATABASE_URL)");
        return;
    };
    let (relay, stalled) = common::stallable_proxy(target).await;
    let through_relay = db.url_via(relay).expect("url");
    let shared = db.share();
    let writer = TestServer::start_on(db, &[]).await;
    let reader = TestServer::start_on(
        shared,
        &[
            ("CONDUIT__DATABASE__URL", through_relay.as_str()),
            ("CONDUIT__DATABASE__MIGRATE_ON_START", "false"),
        ],
    )
    .await;
    let (writes, reads) = (Rest::new(&writer), Rest::new(&reader));
    let author = writes.register(&unique("author")).await;
    let fan = writes.register(&unique("fan")).await;
    let slug = article(&writes, &author).await;
    assert_eq!(count_on(&reads, &slug).await, 0);
    assert_eq!(count_on(&reads, &slug).await, 0, "cached on the reader");

    // The reader's database path goes silent; a write lands on the writer meanwhile.
    stalled.store(true, Ordering::Release);
    writes.favorite(&fan, &slug).await;
    tokio::time::sleep(BOUND + Duration::from_millis(500)).await;
    // Past the bound the reader no longer answers from its cache: its read waits for the
    // database (here: never, within the client's patience) rather than answer stale.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
        .expect("client");
    let answer = impatient
        .get(reader.url(&format!("/api/articles/{slug}")))
        .send()
        .await;
    if let Ok(answer) = answer {
        let body: Value = answer.json().await.expect("json");
        panic!("the reader answered while cut off from the log: {body}");
    }
    stalled.store(false, Ordering::Release);
    let delay = seen_within_bound(&reads, &slug, 1).await;
    eprintln!("caught up {delay:?} after the path came back");
    assert!(
        reader.logs().iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("change log not read within"))),
        "the episode is logged"
    );
}

/// In-process: the services and the cache, as the adapters use them.
mod in_process {
    use super::*;
    use conduit::{
        auth::{Principal, sessions::Client},
        cache::Topic,
        config::{Settings, Sources},
        db,
        modules::{
            articles::service::{ArticleChanges, ArticleService, NewArticle},
            users::service::{Registration, UserService},
        },
        readiness::Readiness,
        state::AppState,
    };

    async fn state(db: &TestDb) -> AppState {
        let settings = Settings::load(Sources {
            config_dir: Path::new("/nonexistent"),
            app_env: None,
            env: [("CONDUIT__DATABASE__URL".to_string(), db.url.clone())].into(),
        })
        .expect("settings");
        let conn = db::connect(&settings.database).await.expect("connect");
        db::migrate(&conn, &settings.database)
            .await
            .expect("migrate");
        AppState::new(Arc::new(settings), conn, Readiness::new())
    }

    async fn principal(state: &AppState, name: &str) -> Principal {
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
        let verified = state.tokens.verify(&token).expect("token");
        Principal {
            user_id: verified.user_id,
            session_id: verified.session_id,
            session_version: verified.session_version,
            session_ends: chrono::Utc::now() + chrono::Duration::days(1),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_load_that_began_before_a_write_never_installs_what_it_read() {
        let db = TestDb::new().await;
        let state = state(&db).await;
        let articles = ArticleService::new(&state);
        let author = principal(&state, "staleauthor").await;
        let created = articles
            .create(
                author,
                NewArticle {
                    title: "Stale set".into(),
                    description: "before".into(),
                    body: "b".into(),
                    tag_list: vec![],
                },
            )
            .await
            .expect("create");
        let cache = state.store.cache().clone();
        let (read_done, paused) = tokio::sync::oneshot::channel::<()>();
        let (resume, resumed) = tokio::sync::oneshot::channel::<()>();
        let store = state.store.clone();
        let slug = created.slug.clone();
        // A load of the article's description that pauses between its read and its
        // insert.
        let loading = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .load(
                        "test-description",
                        slug.clone(),
                        |d: &String| d.len(),
                        move || async move {
                            let read = slug.clone();
                            let description = store
                                .query(move |db| {
                                    Box::pin(async move {
                                        let row = db
                                            .query_one_raw(sea_orm::Statement::from_string(
                                                db.get_database_backend(),
                                                format!(
                                                    "SELECT id, description FROM articles WHERE slug = '{read}'"
                                                ),
                                            ))
                                            .await?
                                            .expect("row");
                                        Ok((
                                            row.try_get::<i64>("", "id")?,
                                            row.try_get::<String>("", "description")?,
                                        ))
                                    })
                                })
                                .await?;
                            let _ = read_done.send(());
                            let _ = resumed.await;
                            let deps = store.cache().stamp([Topic::Article(description.0)]);
                            Ok((description.1, deps))
                        },
                    )
                    .await
                    .map(|found| found.value.as_ref().clone())
            }
        });
        paused.await.expect("the load read");
        // The write lands while the load is paused.
        articles
            .update(
                author,
                &created.slug,
                ArticleChanges {
                    description: Some("after".into()),
                    ..Default::default()
                },
            )
            .await
            .expect("update");
        resume.send(()).expect("resume");
        let loaded = loading.await.expect("join").expect("load");
        assert_eq!(loaded, "before", "the paused load read before the write");
        assert!(
            cache
                .get::<String>("test-description", created.slug.clone())
                .is_none(),
            "what it read was not installed after the write"
        );
        // And the service's own reads show the write.
        let read = articles.get(None, &created.slug).await.expect("get");
        assert_eq!(read.description, "after");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_on_one_key_load_it_once() {
        let db = TestDb::new().await;
        let state = state(&db).await;
        let cache = state.store.cache().clone();
        let loads = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let mut waiting = Vec::new();
        for _ in 0..16 {
            let (cache, loads, mut released) = (cache.clone(), loads.clone(), released.clone());
            let stamping = cache.clone();
            waiting.push(tokio::spawn(async move {
                cache
                    .load(
                        "test-herd",
                        "one key".to_string(),
                        |_: &u64| 8,
                        move || async move {
                            loads.fetch_add(1, Ordering::SeqCst);
                            let _ = released.wait_for(|r| *r).await;
                            Ok((42u64, stamping.stamp([Topic::ListAll])))
                        },
                    )
                    .await
                    .map(|found| *found.value)
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        release.send(true).expect("release");
        for waiter in waiting {
            assert_eq!(waiter.await.expect("join").expect("load"), 42);
        }
        assert_eq!(
            loads.load(Ordering::SeqCst),
            1,
            "one load for sixteen misses"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writes_answer_shows_the_state_it_produced() {
    let server = TestServer::start().await;
    let rest = Rest::new(&server);
    let author = rest.register(&unique("author")).await;
    let fan = rest.register(&unique("fan")).await;
    let slug = article(&rest, &author).await;
    let path = format!("/api/articles/{slug}/favorite");
    let calls = (0..40).map(|i| {
        let (rest, path, fan) = (&rest, path.clone(), fan.clone());
        async move {
            let favorite = i % 2 == 0;
            let (status, body) = if favorite {
                rest.post(&path, Some(&fan), json!({})).await
            } else {
                rest.delete(&path, Some(&fan)).await
            };
            assert_eq!(status, StatusCode::OK, "{body}");
            (favorite, body)
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    let disagreeing: Vec<&Value> = answers
        .iter()
        .filter(|(favorite, body)| {
            let article = &body["article"];
            article["favorited"] != *favorite || article["favoritesCount"] != u64::from(*favorite)
        })
        .map(|(_, body)| body)
        .collect();
    assert!(
        disagreeing.is_empty(),
        "{} of 40 answers disagree with their own call: {disagreeing:?}",
        disagreeing.len()
    );
}
