//! The database going away under three replicas, black-box on Postgres: paused (every
//! Postgres process stopped, as a frozen VM or a partition looks) for 10 s, then
//! restarted. Every replica reports not ready within the readiness bound, recovers by
//! itself, and no acknowledged write is lost.
//!
//! In a test binary of its own: it stops the whole Postgres server, which every other
//! test on it would feel.

mod common;

use std::time::{Duration, Instant};

use common::{Rest, TestDb, TestServer, unique};
use reqwest::StatusCode;
use serde_json::json;

/// `database.health_check_interval` + `database.health_check_timeout`.
const READINESS_BOUND: Duration = Duration::from_secs(2);

fn postgres_pids() -> Vec<String> {
    let out = std::process::Command::new("pgrep")
        .args(["-u", "postgres", "-x", "postgres"])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn signal(pids: &[String], signal: &str) {
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args([signal, pid])
            .status();
    }
}

/// Resumes Postgres however the test ends.
struct Paused(Vec<String>);

impl Drop for Paused {
    fn drop(&mut self) {
        signal(&self.0, "-CONT");
    }
}

async fn ready(server: &TestServer) -> bool {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client");
    matches!(
        client.get(server.url("/readyz")).send().await,
        Ok(r) if r.status() == StatusCode::OK
    )
}

/// Waits until every replica reports `want`; how long that took.
async fn all_report(replicas: &[TestServer], want: bool, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let mut agree = true;
        for replica in replicas {
            agree &= ready(replica).await == want;
        }
        if agree {
            return started.elapsed();
        }
        assert!(
            started.elapsed() <= within,
            "replicas did not report ready={want} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn titles(rest: &Rest, author: &str) -> Vec<String> {
    let (status, body) = rest
        .get(&format!("/api/articles?author={author}&limit=100"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["articles"]
        .as_array()
        .expect("articles")
        .iter()
        .map(|a| a["title"].as_str().expect("title").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_ride_out_a_paused_and_a_restarted_database() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        eprintln!("skipped: needs Postgres (CONDUIT_TEST_DATABASE_URL)");
        return;
    }
    let mut replicas: Vec<TestServer> = Vec::new();
    let mut owner = Some(db);
    for _ in 0..3 {
        let db = match owner.take() {
            Some(db) => db,
            None => replicas[0].db.share(),
        };
        replicas.push(TestServer::start_on(db, &[]).await);
    }
    let rests: Vec<Rest> = replicas.iter().map(Rest::new).collect();
    let name = unique("durable");
    let token = rests[0].register(&name).await;
    let mut acknowledged = Vec::new();
    for (i, rest) in rests.iter().enumerate() {
        let title = format!("Before the outage {i}");
        rest.publish(&token, &title, &[]).await;
        acknowledged.push(title);
    }
    all_report(&replicas, true, Duration::from_secs(5)).await;

    // Paused for 10 s.
    let pids = postgres_pids();
    assert!(!pids.is_empty(), "no Postgres processes to pause");
    let paused = Paused(pids.clone());
    signal(&pids, "-STOP");
    let noticed = all_report(
        &replicas,
        false,
        READINESS_BOUND + Duration::from_millis(700),
    )
    .await;
    eprintln!("pause reported by every replica after {noticed:?}");
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(noticed)).await;
    drop(paused);
    let recovered = all_report(&replicas, true, Duration::from_secs(15)).await;
    eprintln!("every replica ready again {recovered:?} after the resume");
    for rest in &rests {
        let seen = titles(rest, &name).await;
        for title in &acknowledged {
            assert!(seen.contains(title), "{title} lost: {seen:?}");
        }
    }

    // Restarted: connections are cut, the server comes back.
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .next()
        .expect("a cluster");
    let restarted = std::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .status()
        .expect("pg_ctlcluster");
    assert!(restarted.success());
    let recovered = all_report(&replicas, true, Duration::from_secs(20)).await;
    eprintln!("every replica ready {recovered:?} after the restart");
    for (i, rest) in rests.iter().enumerate() {
        let seen = titles(rest, &name).await;
        for title in &acknowledged {
            assert!(
                seen.contains(title),
                "{title} lost after the restart: {seen:?}"
            );
        }
        let title = format!("After the restart {i}");
        let (status, body) = rest
            .post(
                "/api/articles",
                Some(&token),
                json!({"article": {"title": title, "description": "d", "body": "b"}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
}
