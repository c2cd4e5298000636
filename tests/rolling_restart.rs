//! A rolling restart under load fails nothing, seen from the clients. Three replicas on
//! Postgres sit behind haproxy (Debian's package), which health-checks `/readyz` as a
//! Kubernetes Service's endpoints follow readiness. Clients keep reading and writing
//! through it over every path a cluster offers: an HTTP proxy (HTTP/1.1 and h2 in front,
//! h2 to the replicas, like an ingress) and a TCP proxy (connections pinned to one
//! replica, like a Service), REST over HTTP/1.1 and h2 and gRPC over both. Meanwhile each
//! replica in turn gets SIGTERM, exits, and is started again on its address. Every
//! request must succeed: a failure means the drain let a client see the replica go.

mod common;

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use common::{Rest, TestDb, TestServer, grpc_request, unique};
use conduit::proto::conduit::v1::{self as pb, article_service_client::ArticleServiceClient};
use tonic::transport::Channel;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// haproxy on two loopback ports: `http` proxies requests (h2 to the replicas), `tcp`
/// proxies connections. Both send only to replicas whose `/readyz` answers 200, checked
/// every 100 ms; one failed check takes a replica out, two passed bring it back.
struct Haproxy {
    http: u16,
    tcp: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(replicas: &[u16]) -> Option<Haproxy> {
        let binary = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let (http, tcp) = (free_port(), free_port());
        let servers = |extra: &str| {
            replicas
                .iter()
                .enumerate()
                .map(|(n, port)| format!("    server r{n} 127.0.0.1:{port} {extra}\n"))
                .collect::<String>()
        };
        let checks = "    option httpchk GET /readyz\n    http-check expect status 200\n    \
                      default-server check inter 100ms fall 1 rise 2\n";
        let config = format!(
            "global\n    maxconn 4096\n\
             defaults\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n    timeout check 1s\n\
             frontend requests\n    mode http\n    bind 127.0.0.1:{http}\n    default_backend requests\n\
             backend requests\n    mode http\n{checks}{}\
             frontend connections\n    mode tcp\n    bind 127.0.0.1:{tcp}\n    default_backend connections\n\
             backend connections\n    mode tcp\n{checks}{}",
            servers("proto h2"),
            servers(""),
        );
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).ok()?;
        let child = Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .ok()?;
        // A guard against a proxy that never comes up, not a timing expectation.
        for _ in 0..100 {
            if [http, tcp]
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
            {
                return Some(Haproxy {
                    http,
                    tcp,
                    child,
                    _dir: dir,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one kind of client saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// gRPC calls sent again because they never left the client (see `never_sent`).
    resent: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut errors = self.errors.lock().expect("errors");
                if errors.len() < 5 {
                    errors.push(e);
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Client {
    RestHttp1,
    RestHttp2,
    Grpc,
}

/// Whether a tonic call failed before any of it was written: hyper cancels a request
/// still queued for a connection whose task has ended (the connection closed after its
/// GOAWAY), and tonic reports that as `CANCELLED` "operation was canceled" with the hyper
/// error as its source (a `CANCELLED` answered by a server carries none).
fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        source = error.source();
    }
    false
}

/// A client's loop: reads (a list page) with a favourite and an unfavourite every few
/// requests, one request at a time, on the connections its client library keeps.
async fn drive(
    client: Client,
    proxy: SocketAddr,
    token: String,
    slug: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let base = format!("http://{proxy}");
    let http = match client {
        Client::RestHttp1 => reqwest::Client::builder().http1_only().build(),
        _ => reqwest::Client::builder().http2_prior_knowledge().build(),
    }
    .expect("http client");
    let mut grpc = match client {
        Client::Grpc => Some(ArticleServiceClient::new(
            Channel::from_shared(base.clone())
                .expect("uri")
                .connect_lazy(),
        )),
        _ => None,
    };
    let auth = common::token_header(&token);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let write = match n % 8 {
            0 => Some(true),
            4 => Some(false),
            _ => None,
        };
        let outcome = if let Some(grpc) = grpc.as_mut() {
            // What gRPC clients call transparent retry (gRFC A6), which tonic lacks: an
            // RPC handed to a connection in the instant it closes after GOAWAY never left
            // the client, so it is sent again, on the next connection.
            let mut attempts = 0;
            loop {
                attempts += 1;
                let answer = match write {
                    Some(true) => grpc
                        .favorite_article(grpc_request(
                            pb::FavoriteArticleRequest { slug: slug.clone() },
                            Some(&token),
                        ))
                        .await
                        .map(drop),
                    Some(false) => grpc
                        .unfavorite_article(grpc_request(
                            pb::UnfavoriteArticleRequest { slug: slug.clone() },
                            Some(&token),
                        ))
                        .await
                        .map(drop),
                    None => grpc
                        .list_articles(pb::ListArticlesRequest {
                            page_size: 5,
                            ..Default::default()
                        })
                        .await
                        .map(drop),
                };
                match answer {
                    Err(status) if attempts < 3 && never_sent(&status) => {
                        tally.resent.fetch_add(1, Ordering::Relaxed);
                    }
                    answer => {
                        break answer.map_err(|status| {
                            format!("{:?}: {}", status.code(), status.message())
                        });
                    }
                }
            }
        } else {
            let request = match write {
                Some(true) => http.post(format!("{base}/api/articles/{slug}/favorite")),
                Some(false) => http.delete(format!("{base}/api/articles/{slug}/favorite")),
                None => http.get(format!("{base}/api/articles?limit=5")),
            };
            match request.header("authorization", &auth).send().await {
                Ok(response) if response.status().is_success() => response
                    .bytes()
                    .await
                    .map(drop)
                    .map_err(|e| format!("body: {e:?}")),
                Ok(response) => Err(format!("status {}", response.status())),
                Err(e) => Err(format!("{e:?}")),
            }
        };
        tally.record(outcome);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_fails_no_request() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        eprintln!("skipped: replicas need Postgres (CONDUIT_TEST_DATABASE_URL)");
        return;
    }
    let migrated = common::run_cli(&["migrate", "up"], &[], &db.url);
    assert!(migrated.status.success(), "{migrated:?}");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    // The prod drain, shortened: readiness off for a second (ten health checks) before
    // the listener closes.
    let start = |n: usize| {
        let db = db.share();
        let addr = addrs[n].clone();
        async move {
            TestServer::start_on(
                db,
                &[
                    ("CONDUIT__SERVER__ADDR", addr.as_str()),
                    ("CONDUIT__SERVER__DRAIN_DELAY", "1s"),
                    ("CONDUIT__SERVER__SHUTDOWN_TIMEOUT", "20s"),
                    ("CONDUIT__DATABASE__MIGRATE_ON_START", "false"),
                ],
            )
            .await
        }
    };
    let mut replicas = Vec::new();
    for n in 0..3 {
        replicas.push(Some(start(n).await));
    }
    let proxy = Haproxy::start(&ports).expect("haproxy (apt-get install haproxy)");
    let first = replicas[0].as_ref().expect("replica");
    let rest = Rest::new(first);
    let author = rest.register(&unique("roll")).await;
    let slug = rest.publish(&author, &unique("Rolled"), &[]).await;
    // Every replica is in before the load starts.
    wait_until_served_by_all(&replicas, proxy.http).await;

    let stop = Arc::new(AtomicBool::new(false));
    let paths = [("HTTP proxy", proxy.http), ("TCP proxy", proxy.tcp)];
    let mut tallies = Vec::new();
    let mut workers = Vec::new();
    for (path, port) in paths {
        for client in [Client::RestHttp1, Client::RestHttp2, Client::Grpc] {
            let tally = Arc::new(Tally::default());
            tallies.push((format!("{client:?} via the {path}"), tally.clone()));
            for _ in 0..2 {
                workers.push(tokio::spawn(drive(
                    client,
                    SocketAddr::from(([127, 0, 0, 1], port)),
                    author.clone(),
                    slug.clone(),
                    stop.clone(),
                    tally.clone(),
                )));
            }
        }
    }
    let answered = |tallies: &[(String, Arc<Tally>)]| -> Vec<u64> {
        tallies
            .iter()
            .map(|(_, t)| t.ok.load(Ordering::Relaxed))
            .collect()
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (n, slot) in replicas.iter_mut().enumerate() {
        let before = answered(&tallies);
        let leaving = slot.take().expect("replica");
        leaving.terminate();
        let (status, leaving) = tokio::task::spawn_blocking(move || {
            let mut leaving = leaving;
            let status = leaving.wait();
            (status, leaving)
        })
        .await
        .expect("wait");
        assert!(status.success(), "replica {n} exited with {status}");
        drop(leaving);
        // Back in the proxy's rotation (two passed checks) before the next one leaves,
        // as a Deployment's rolling update waits for the new pod to be ready.
        let back = slot.insert(start(n).await);
        assert!(back.wait_for_readyz(reqwest::StatusCode::OK).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = answered(&tallies);
        for ((name, _), (b, a)) in tallies.iter().zip(before.iter().zip(&after)) {
            assert!(a > b, "{name} got no answer while replica {n} restarted");
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("worker");
    }
    let mut report = String::new();
    for (name, tally) in &tallies {
        report.push_str(&format!(
            "{name}: {} answered, {} failed {:?}, {} sent again (never sent)\n",
            tally.ok.load(Ordering::Relaxed),
            tally.failed.load(Ordering::Relaxed),
            tally.errors.lock().expect("errors"),
            tally.resent.load(Ordering::Relaxed),
        ));
    }
    eprintln!("{report}");
    assert!(
        tallies
            .iter()
            .all(|(_, t)| t.failed.load(Ordering::Relaxed) == 0),
        "requests failed during the rolling restart:\n{report}"
    );
    // Each restarted replica took its share again.
    for (n, replica) in replicas.iter().enumerate() {
        let served = replica
            .as_ref()
            .expect("replica")
            .logs()
            .iter()
            .filter(|e| e["message"] == "request finished" && e["path"] != "/readyz")
            .count();
        assert!(served > 0, "replica {n} served nothing after its restart");
    }
}

/// Waits until a request through the proxy has reached every replica (round robin).
async fn wait_until_served_by_all(replicas: &[Option<TestServer>], port: u16) {
    let http = reqwest::Client::new();
    for _ in 0..200 {
        let _ = http
            .get(format!("http://127.0.0.1:{port}/api/tags"))
            .send()
            .await;
        let all = replicas.iter().flatten().all(|r| {
            r.logs()
                .iter()
                .any(|e| e["message"] == "request finished" && e["path"] == "/api/tags")
        });
        if all {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the proxy never reached every replica");
}
