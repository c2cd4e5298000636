//! The mixed workload (`--mixed`): Postgres, 20 users each following 4 others, articles
//! spread over them; reads — 40% a list of 20, 30% a single article, 20% a feed, 10% the
//! tags, half of the lists and articles signed in — with a share of favourite /
//! unfavourite writes. Measured side by side in one run, for each write share: conduit
//! over REST and over gRPC, conduit with its cache off, the minimal peer, and three
//! conduit replicas on one database with, meanwhile, a probe that writes on one replica
//! and times how soon the others show it (cross-replica staleness).

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use hyper::Method;
use serde::Serialize;
use serde_json::Value;

use crate::{
    Args, JWT_SECRET, Process, TestDatabase,
    load::{self, Call, Mix, Outcome},
    seed,
};

#[derive(Debug, Clone, Serialize)]
pub struct MixedResult {
    pub articles: usize,
    /// Writes per thousand requests.
    pub writes_per_mille: u64,
    /// conduit-rest, conduit-grpc, nocache-rest, peer-rest, replicas3-rest
    pub target: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Share of cache lookups that hit, over the run (conduit targets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hit_rate: Option<f64>,
    /// Cross-replica staleness (three replicas): p50, p99, max in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staleness_ms: Option<[f64; 3]>,
}

/// conduit with `env` on top of the production profile; its API and admin addresses.
fn conduit(
    binary: &Path,
    workdir: &Path,
    url: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<(Process, SocketAddr)> {
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .current_dir(workdir)
        .env("APP_ENV", "prod")
        .env("CONDUIT__SERVER__ADDR", "127.0.0.1:0")
        .env("CONDUIT__SERVER__ADMIN_ADDR", "127.0.0.1:0")
        .env("CONDUIT__SERVER__DRAIN_DELAY", "0s")
        .env("CONDUIT__DATABASE__URL", url)
        .env("CONDUIT__DATABASE__MIGRATE_ON_START", "true")
        .env("CONDUIT__AUTH__JWT_SECRET", JWT_SECRET)
        .env("CONDUIT__TELEMETRY__LOG_FORMAT", "json")
        // Seeding registers 20 users and the probe logs in: not an attack.
        .env("CONDUIT__RATE_LIMIT__PER_IP_PER_MINUTE", "0");
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut api, mut admin) = (None, None);
    while api.is_none() || admin.is_none() {
        let Some(Ok(line)) = lines.next() else {
            bail!("conduit exited before listening");
        };
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let addr = event["addr"].as_str().and_then(|a| a.parse().ok());
        match event["message"].as_str() {
            Some("listening") => api = addr,
            Some("admin listening") => admin = addr,
            _ => {}
        }
    }
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let (Some(api), Some(admin)) = (api, admin) else {
        bail!("no address");
    };
    Ok((Process { child, addr: api }, admin))
}

/// Cache hits and misses so far, over every part.
async fn lookups(admin: SocketAddr) -> anyhow::Result<(f64, f64)> {
    let text = seed::text(admin, "/metrics").await?;
    let (mut hits, mut misses) = (0.0, 0.0);
    for line in text
        .lines()
        .filter(|l| l.starts_with("conduit_cache_lookups_total{"))
    {
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if line.contains("result=\"hit\"") {
            hits += value;
        } else {
            misses += value;
        }
    }
    Ok((hits, misses))
}

/// Writes on one replica, then times how soon each other replica shows the write, every
/// 250 ms until `until`.
async fn staleness_probe(
    replicas: Vec<SocketAddr>,
    token: String,
    slug: String,
    until: Instant,
) -> anyhow::Result<Vec<f64>> {
    let mut delays = Vec::new();
    let mut round = 0usize;
    while Instant::now() < until {
        let writer = replicas[round % replicas.len()];
        let favorite = round.is_multiple_of(2);
        let path = format!("/api/articles/{slug}/favorite");
        let method = if favorite {
            Method::POST
        } else {
            Method::DELETE
        };
        seed::call(writer, method, &path, Some(&token), None).await?;
        let expected = u64::from(favorite);
        for reader in replicas.iter().filter(|r| **r != writer) {
            let started = Instant::now();
            loop {
                let body = seed::call(
                    *reader,
                    Method::GET,
                    &format!("/api/articles/{slug}"),
                    None,
                    None,
                )
                .await?;
                if body["article"]["favoritesCount"] == expected {
                    delays.push(started.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
                if started.elapsed() > Duration::from_secs(10) {
                    bail!("replica {reader} never saw the probe's write");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(delays)
}

fn percentiles(mut delays: Vec<f64>) -> Option<[f64; 3]> {
    if delays.is_empty() {
        return None;
    }
    delays.sort_by(f64::total_cmp);
    let at =
        |q: f64| delays[((delays.len() as f64 * q).ceil() as usize).clamp(1, delays.len()) - 1];
    Some([at(0.5), at(0.99), at(1.0)])
}

pub async fn run(
    args: &Args,
    conduit_bin: &Path,
    workdir: &Path,
    bin_dir: &Path,
) -> anyhow::Result<Vec<MixedResult>> {
    let duration = Duration::from_secs_f64(args.seconds);
    let shares = &args.write_shares;
    let mut results = Vec::new();
    for &size in &args.sizes {
        let db = TestDatabase::create("postgres", &args.postgres, size).await?;
        let (server, admin) = conduit(conduit_bin, workdir, &db.url, &[])?;
        eprintln!(
            "== mixed, {size} articles: seeding conduit at {}",
            server.addr
        );
        let seeded = seed::seed_mixed(server.addr, size).await?;
        {
            use sqlx::Executor;
            let analyze = sqlx::PgPool::connect(&db.url).await?;
            analyze.execute("ANALYZE").await?;
            analyze.close().await;
        }
        let peer = Process::peer(&bin_dir.join("bench-peer"), &db.url)?;
        let mix = |writes_per_mille: u64, grpc: bool| {
            Call::Mix(Arc::new(Mix {
                writes_per_mille,
                tokens: seeded.tokens.clone(),
                slugs: seeded.slugs.clone(),
                grpc,
            }))
        };
        let mut record = |share: u64,
                          target: &str,
                          outcome: Outcome,
                          hit_rate: Option<f64>,
                          staleness_ms: Option<[f64; 3]>| {
            eprintln!(
                "   mixed {:>4.1}% {target:<15} {:>9.0} req/s  p99 {:>6.2} ms  errors {}{}{}",
                share as f64 / 10.0,
                outcome.requests_per_second,
                outcome.p99_ms,
                outcome.errors,
                hit_rate
                    .map(|h| format!("  hits {:.0}%", h * 100.0))
                    .unwrap_or_default(),
                staleness_ms
                    .map(|s| format!("  staleness p99 {:.0} ms (max {:.0})", s[1], s[2]))
                    .unwrap_or_default(),
            );
            results.push(MixedResult {
                articles: size,
                writes_per_mille: share,
                target: target.into(),
                outcome,
                hit_rate,
                staleness_ms,
            });
        };
        for &share in shares {
            for (target, grpc) in [("conduit-rest", false), ("conduit-grpc", true)] {
                let before = lookups(admin).await?;
                let outcome = load::run(
                    server.addr,
                    mix(share, grpc),
                    args.connections,
                    args.grpc_streams,
                    duration,
                )
                .await?;
                let after = lookups(admin).await?;
                let (hits, misses) = (after.0 - before.0, after.1 - before.1);
                let rate = (hits + misses > 0.0).then(|| hits / (hits + misses));
                record(share, target, outcome, rate, None);
            }
            let outcome =
                load::run(peer.addr, mix(share, false), args.connections, 1, duration).await?;
            record(share, "peer-rest", outcome, None, None);
        }
        drop(server);
        drop(peer);

        let (uncached, _) = conduit(
            conduit_bin,
            workdir,
            &db.url,
            &[("CONDUIT__CACHE__MAX_BYTES", "0")],
        )?;
        for &share in shares {
            let outcome = load::run(
                uncached.addr,
                mix(share, false),
                args.connections,
                1,
                duration,
            )
            .await?;
            record(share, "nocache-rest", outcome, None, None);
        }
        drop(uncached);

        // Three replicas on the one database; the pool budget split between them.
        let mut replicas = Vec::new();
        for _ in 0..3 {
            replicas.push(conduit(
                conduit_bin,
                workdir,
                &db.url,
                &[("CONDUIT__DATABASE__MAX_CONNECTIONS", "6")],
            )?);
        }
        let addrs: Vec<SocketAddr> = replicas.iter().map(|(p, _)| p.addr).collect();
        let probe_token = seeded.tokens[0].clone();
        for &share in shares {
            let mut before = (0.0, 0.0);
            for (_, admin) in &replicas {
                let l = lookups(*admin).await?;
                before = (before.0 + l.0, before.1 + l.1);
            }
            let until = Instant::now() + Duration::from_secs(1) + duration;
            let probe = tokio::spawn(staleness_probe(
                addrs.clone(),
                probe_token.clone(),
                seeded.probe_slug.clone(),
                until,
            ));
            let outcome =
                load::run_on(&addrs, mix(share, false), args.connections, 1, duration).await?;
            let delays = probe.await??;
            let mut after = (0.0, 0.0);
            for (_, admin) in &replicas {
                let l = lookups(*admin).await?;
                after = (after.0 + l.0, after.1 + l.1);
            }
            let (hits, misses) = (after.0 - before.0, after.1 - before.1);
            let rate = (hits + misses > 0.0).then(|| hits / (hits + misses));
            record(share, "replicas3-rest", outcome, rate, percentiles(delays));
        }
        drop(replicas);
        db.drop().await?;
    }
    println!("{}", table(&results));
    Ok(results)
}

fn table(results: &[MixedResult]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut sizes: Vec<usize> = results.iter().map(|r| r.articles).collect();
    sizes.dedup();
    let get = |size: usize, share: u64, target: &str| {
        results
            .iter()
            .find(|r| r.articles == size && r.writes_per_mille == share && r.target == target)
    };
    let rate = |r: Option<&MixedResult>| {
        r.map(|r| format!("{:.0}", r.outcome.requests_per_second))
            .unwrap_or_else(|| "–".into())
    };
    let ratio = |a: Option<&MixedResult>, b: Option<&MixedResult>| match (a, b) {
        (Some(a), Some(b)) if b.outcome.requests_per_second > 0.0 => format!(
            "{:.2}×",
            a.outcome.requests_per_second / b.outcome.requests_per_second
        ),
        _ => "–".into(),
    };
    for size in sizes {
        let _ = writeln!(out, "\nmixed workload, {size} articles (req/s)");
        let _ = writeln!(
            out,
            "| writes | REST | ÷ write-free | gRPC | cache off | ÷ cache off | peer | ÷ peer | 3 replicas | hits | staleness p99 / max ms | p99 REST ms |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        let mut shares: Vec<u64> = results
            .iter()
            .filter(|r| r.articles == size)
            .map(|r| r.writes_per_mille)
            .collect();
        shares.sort_unstable();
        shares.dedup();
        for share in shares {
            let rest = get(size, share, "conduit-rest");
            let three = get(size, share, "replicas3-rest");
            let _ = writeln!(
                out,
                "| {:.1}% | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                share as f64 / 10.0,
                rate(rest),
                ratio(rest, get(size, 0, "conduit-rest")),
                rate(get(size, share, "conduit-grpc")),
                rate(get(size, share, "nocache-rest")),
                ratio(rest, get(size, share, "nocache-rest")),
                rate(get(size, share, "peer-rest")),
                ratio(rest, get(size, share, "peer-rest")),
                rate(three),
                rest.and_then(|r| r.hit_rate)
                    .map(|h| format!("{:.0}%", h * 100.0))
                    .unwrap_or_else(|| "–".into()),
                three
                    .and_then(|r| r.staleness_ms)
                    .map(|s| format!("{:.0} / {:.0}", s[1], s[2]))
                    .unwrap_or_else(|| "–".into()),
                rest.map(|r| format!("{:.2}", r.outcome.p99_ms))
                    .unwrap_or_else(|| "–".into()),
            );
        }
    }
    out
}
