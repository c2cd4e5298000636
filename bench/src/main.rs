//! conduit's benchmark harness. For each database (SQLite, Postgres) and data size it
//! starts the release build of conduit on loopback, seeds it through its own API, and
//! measures throughput and latency of the read and write paths over REST and over gRPC;
//! on Postgres also the same reads from a minimal hand-written peer (`bench-peer`) and
//! the database alone (the same one-statement queries, prepared, 16 clients). Then the
//! stack-cost pair (`stack-probe`). Prints a table and writes JSON. No pass/fail: the
//! figures are for docs/PERFORMANCE.md, compared as ratios within one run.
//!
//! Run it with `bench/run` (builds the release binaries first).

mod load;
mod mixed;
mod report;
mod seed;
// Shared with bench-peer; the harness runs only its tag-list statement.
#[allow(dead_code)]
mod sql;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use load::{Call, GrpcCall, Outcome};
use serde::Serialize;

const JWT_SECRET: &str = "benchmark-secret-not-for-production-0123456789";

#[derive(Parser)]
#[command(about = "conduit's benchmark harness")]
struct Args {
    /// Databases to measure on (`none`: only the stack-cost pair).
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    databases: Vec<String>,
    /// Article counts to seed (the flatness check compares the largest with the smallest).
    #[arg(long, value_delimiter = ',', default_value = "60,5000")]
    sizes: Vec<usize>,
    /// Measured seconds per scenario (after one second of warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrent connections (closed loop).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// gRPC calls in flight per HTTP/2 connection (`--connections` in all), as a gRPC
    /// channel multiplexes them; 1 gives each its own connection, like REST's.
    #[arg(long, default_value_t = 1)]
    grpc_streams: usize,
    /// A Postgres server's maintenance database; each run creates and drops its own.
    #[arg(
        long,
        default_value = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
    )]
    postgres: String,
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/bench/report.json")]
    json: PathBuf,
    /// Only these scenarios (e.g. `tags,list`); all when empty.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Skip the stack-cost pair.
    #[arg(long)]
    no_stack: bool,
    /// Another conduit binary to measure (e.g. an earlier commit's, for before/after
    /// figures from one harness); default: the one built beside the harness.
    #[arg(long)]
    conduit: Option<PathBuf>,
    /// The directory conduit runs in (its `config/` is read from there); default: this
    /// workspace.
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Run the mixed read/write workload (Postgres) instead of the per-path scenarios:
    /// `--mixed --sizes 200,5000`.
    #[arg(long)]
    mixed: bool,
    /// Write shares of the mixed workload, per thousand requests.
    #[arg(long, value_delimiter = ',', default_value = "0,10,50,200")]
    write_shares: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
struct Measurement {
    database: String,
    articles: usize,
    scenario: String,
    /// conduit-rest, conduit-grpc, peer-rest, postgres, stack-full, stack-bare
    target: String,
    #[serde(flatten)]
    outcome: Outcome,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("binary directory")?
        .to_path_buf();
    let conduit = args
        .conduit
        .clone()
        .unwrap_or_else(|| bin_dir.join("conduit"));
    let workdir = args.workdir.clone().unwrap_or_else(workspace_root);
    if !conduit.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p conduit -p conduit-bench`",
            conduit.display()
        );
    }
    if args.mixed {
        let started = Instant::now();
        let results = mixed::run(&args, &conduit, &workdir, &bin_dir).await?;
        if let Some(dir) = args.json.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(
            &args.json,
            serde_json::to_string_pretty(&serde_json::json!({
                "machine": report::machine(),
                "connections": args.connections,
                "seconds": args.seconds,
                "mixed": results,
            }))?,
        )?;
        eprintln!(
            "wrote {} ({:.0} s in all)",
            args.json.display(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let duration = Duration::from_secs_f64(args.seconds);
    let mut results: Vec<Measurement> = Vec::new();
    let started = Instant::now();
    for database in args.databases.iter().filter(|d| *d != "none") {
        for &size in &args.sizes {
            let db = TestDatabase::create(database, &args.postgres, size).await?;
            let server = Process::conduit(&conduit, &workdir, &db.url)?;
            eprintln!(
                "== {database}, {size} articles: seeding conduit at {}",
                server.addr
            );
            let seeded = seed::seed(server.addr, size).await?;
            if database == "postgres" {
                // Fresh tables have no planner statistics until autovacuum gets to them;
                // a database in service has them.
                use sqlx::Executor;
                let analyze = sqlx::PgPool::connect(&db.url).await?;
                analyze.execute("ANALYZE").await?;
                analyze.close().await;
            }
            let peer = if database == "postgres" {
                Some(Process::peer(&bin_dir.join("bench-peer"), &db.url)?)
            } else {
                None
            };
            let mut measure = async |scenario: &str, target: &str, addr, call| {
                if !args.only.is_empty() && !args.only.iter().any(|o| o == scenario) {
                    return anyhow::Ok(());
                }
                let outcome =
                    load::run(addr, call, args.connections, args.grpc_streams, duration).await?;
                eprintln!(
                    "   {scenario:<12} {target:<13} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
                    outcome.requests_per_second, outcome.p50_ms, outcome.p99_ms, outcome.errors
                );
                results.push(Measurement {
                    database: database.clone(),
                    articles: size,
                    scenario: scenario.into(),
                    target: target.into(),
                    outcome,
                });
                Ok(())
            };
            let reader = seeded.reader_token.clone();
            let tag = seeded.busy_tag.clone();
            let slugs = Arc::new(seeded.slugs.clone());
            let reads: Vec<(&str, Call, Call)> = vec![
                (
                    "tags",
                    Call::get("/api/tags", None),
                    Call::Grpc(GrpcCall::Tags),
                ),
                (
                    "list",
                    Call::get("/api/articles?limit=20", None),
                    Call::Grpc(GrpcCall::List {
                        tag: None,
                        size: 20,
                    }),
                ),
                (
                    "list-by-tag",
                    Call::get(format!("/api/articles?tag={tag}&limit=10"), None),
                    Call::Grpc(GrpcCall::List {
                        tag: Some(tag.clone()),
                        size: 10,
                    }),
                ),
                (
                    "feed",
                    Call::get("/api/articles/feed?limit=20", Some(&reader)),
                    Call::Grpc(GrpcCall::Feed {
                        token: reader.clone(),
                        size: 20,
                    }),
                ),
                (
                    "article",
                    Call::get_with(
                        {
                            let slugs = slugs.clone();
                            Arc::new(move |n| {
                                format!("/api/articles/{}", slugs[n as usize % slugs.len()])
                            })
                        },
                        None,
                    ),
                    Call::Grpc(GrpcCall::Get {
                        slugs: slugs.clone(),
                    }),
                ),
            ];
            for (scenario, rest, grpc) in reads {
                measure(scenario, "conduit-rest", server.addr, rest.clone()).await?;
                measure(scenario, "conduit-grpc", server.addr, grpc).await?;
                if let Some(peer) = &peer {
                    measure(scenario, "peer-rest", peer.addr, rest).await?;
                }
            }
            // Before the writes below, which add thousands of articles.
            let mut ceilings = Vec::new();
            if database == "postgres" {
                for (scenario, outcome) in
                    seed::ceiling(&db.url, seeded.reader_id, &tag, &slugs[0], duration).await?
                {
                    if !args.only.is_empty() && !args.only.iter().any(|o| o == scenario) {
                        continue;
                    }
                    eprintln!(
                        "   {scenario:<12} {:<13} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
                        "postgres", outcome.requests_per_second, outcome.p50_ms, outcome.p99_ms
                    );
                    ceilings.push(Measurement {
                        database: database.clone(),
                        articles: size,
                        scenario: scenario.into(),
                        target: "postgres".into(),
                        outcome,
                    });
                }
            }
            let author = seeded.author_token.clone();
            let writes: Vec<(&str, Call, Call)> = vec![
                (
                    "create",
                    Call::post(
                        Arc::new(|_| "/api/articles".to_string()),
                        Arc::new(|n| {
                            serde_json::json!({"article": {
                                "title": format!("REST bench {n} {}", std::process::id()),
                                "description": "Written by the benchmark",
                                "body": "A body of moderate length, as articles have.".repeat(8),
                                "tagList": ["bench", format!("tag{}", n % 50)],
                            }})
                            .to_string()
                        }),
                        &author,
                    ),
                    Call::Grpc(GrpcCall::Create {
                        token: author.clone(),
                    }),
                ),
                (
                    "favorite",
                    Call::post(
                        {
                            let slugs = slugs.clone();
                            Arc::new(move |n| {
                                format!(
                                    "/api/articles/{}/favorite",
                                    slugs[n as usize % slugs.len()]
                                )
                            })
                        },
                        Arc::new(|_| "{}".to_string()),
                        &reader,
                    ),
                    Call::Grpc(GrpcCall::Favorite {
                        token: reader.clone(),
                        slugs: slugs.clone(),
                    }),
                ),
            ];
            for (scenario, rest, grpc) in writes {
                measure(scenario, "conduit-rest", server.addr, rest).await?;
                measure(scenario, "conduit-grpc", server.addr, grpc).await?;
            }
            results.extend(ceilings);
            drop(peer);
            drop(server);
            db.drop().await?;
        }
    }
    if !args.no_stack {
        for (target, flag) in [("stack-full", "--full"), ("stack-bare", "--bare")] {
            let probe = Process::probe(&bin_dir.join("stack-probe"), flag)?;
            let outcome = load::run(
                probe.addr,
                Call::get("/probe", None),
                args.connections,
                1,
                duration,
            )
            .await?;
            eprintln!(
                "   {:<12} {target:<13} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
                "stack", outcome.requests_per_second, outcome.p50_ms, outcome.p99_ms
            );
            results.push(Measurement {
                database: "none".into(),
                articles: 0,
                scenario: "stack".into(),
                target: target.into(),
                outcome,
            });
        }
    }
    println!("{}", report::table(&results));
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let machine = report::machine();
    std::fs::write(
        &args.json,
        serde_json::to_string_pretty(&serde_json::json!({
            "machine": machine,
            "connections": args.connections,
            "grpc_streams": args.grpc_streams,
            "seconds": args.seconds,
            "results": results,
        }))?,
    )?;
    eprintln!(
        "wrote {} ({:.0} s in all)",
        args.json.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A database of its own for one run: a SQLite file in a temporary directory, or a
/// Postgres database created on the given server and dropped afterwards.
struct TestDatabase {
    url: String,
    postgres: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    async fn create(kind: &str, maintenance: &str, size: usize) -> anyhow::Result<Self> {
        match kind {
            "sqlite" => {
                let dir = tempfile::tempdir()?;
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("bench.db").display()
                );
                Ok(TestDatabase {
                    url,
                    postgres: None,
                    _dir: Some(dir),
                })
            }
            "postgres" => {
                use sqlx::Executor;
                let name = format!("conduit_bench_{}_{size}", std::process::id());
                let admin = sqlx::PgPool::connect(maintenance).await?;
                admin
                    .execute(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name}"
                    )))
                    .await?;
                admin
                    .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await?;
                admin.close().await;
                let (base, query) = maintenance
                    .split_once('?')
                    .map(|(b, q)| (b, format!("?{q}")))
                    .unwrap_or((maintenance, String::new()));
                let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
                Ok(TestDatabase {
                    url: format!("{base}/{name}{query}"),
                    postgres: Some((maintenance.to_string(), name)),
                    _dir: None,
                })
            }
            other => bail!("unknown database {other:?} (sqlite or postgres)"),
        }
    }

    async fn drop(self) -> anyhow::Result<()> {
        use sqlx::Executor;
        if let Some((maintenance, name)) = &self.postgres {
            let admin = sqlx::PgPool::connect(maintenance).await?;
            admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await?;
            admin.close().await;
        }
        Ok(())
    }
}

/// A server process on loopback; killed when dropped.
struct Process {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// conduit as production runs it: APP_ENV=prod, JSON access logs at info, metrics.
    fn conduit(binary: &Path, workdir: &Path, database_url: &str) -> anyhow::Result<Process> {
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .current_dir(workdir)
            .env("APP_ENV", "prod")
            .env("CONDUIT__SERVER__ADDR", "127.0.0.1:0")
            .env("CONDUIT__SERVER__ADMIN_ADDR", "127.0.0.1:0")
            .env("CONDUIT__SERVER__DRAIN_DELAY", "0s")
            .env("CONDUIT__DATABASE__URL", database_url)
            .env("CONDUIT__DATABASE__MIGRATE_ON_START", "true")
            .env("CONDUIT__AUTH__JWT_SECRET", JWT_SECRET)
            .env("CONDUIT__TELEMETRY__LOG_FORMAT", "json");
        Self::spawn(command, |line| {
            let event: serde_json::Value = serde_json::from_str(line).ok()?;
            (event["message"] == "listening").then(|| event["addr"].as_str().map(str::to_string))?
        })
    }

    fn peer(binary: &Path, database_url: &str) -> anyhow::Result<Process> {
        let mut command = Command::new(binary);
        command
            .env("DATABASE_URL", database_url)
            .env("JWT_SECRET", JWT_SECRET)
            .env("ADDR", "127.0.0.1:0");
        Self::spawn(command, |line| {
            line.strip_prefix("listening ").map(str::to_string)
        })
    }

    fn probe(binary: &Path, flag: &str) -> anyhow::Result<Process> {
        let mut command = Command::new(binary);
        command
            .arg(flag)
            .current_dir(workspace_root())
            .env("APP_ENV", "prod")
            .env("CONDUIT__SERVER__ADDR", "127.0.0.1:0")
            .env("CONDUIT__DATABASE__URL", "sqlite::memory:")
            .env("CONDUIT__AUTH__JWT_SECRET", JWT_SECRET)
            .env("CONDUIT__TELEMETRY__LOG_FORMAT", "json");
        Self::spawn(command, |line| {
            if let Some(addr) = line.strip_prefix("listening ") {
                return Some(addr.to_string());
            }
            let event: serde_json::Value = serde_json::from_str(line).ok()?;
            (event["message"] == "listening").then(|| event["addr"].as_str().map(str::to_string))?
        })
    }

    /// Starts `command`, reads stdout until `addr_of` finds the listening address, then
    /// keeps draining stdout (a full pipe would stall the server's logging).
    fn spawn(
        mut command: Command,
        addr_of: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Process> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = addr_of(&line) {
                        break addr;
                    }
                }
                _ => bail!("{command:?} exited before listening"),
            }
        };
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Ok(Process {
            child,
            addr: addr.parse()?,
        })
    }
}

/// config/ lives at the workspace root; conduit reads it from its working directory.
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}
