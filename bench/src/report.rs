//! The table printed at the end of a run: per database and size, each scenario's
//! throughput over REST and gRPC with the ratios the goals are stated in.

use std::fmt::Write;

use crate::Measurement;

fn find<'a>(
    results: &'a [Measurement],
    database: &str,
    articles: usize,
    scenario: &str,
    target: &str,
) -> Option<&'a Measurement> {
    results.iter().find(|m| {
        m.database == database
            && m.articles == articles
            && m.scenario == scenario
            && m.target == target
    })
}

fn ratio(a: Option<&Measurement>, b: Option<&Measurement>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.outcome.requests_per_second > 0.0 => format!(
            "{:.2}×",
            a.outcome.requests_per_second / b.outcome.requests_per_second
        ),
        _ => "–".into(),
    }
}

fn rate(m: Option<&Measurement>) -> String {
    m.map(|m| format!("{:.0}", m.outcome.requests_per_second))
        .unwrap_or_else(|| "–".into())
}

fn p99(m: Option<&Measurement>) -> String {
    m.map(|m| format!("{:.2}", m.outcome.p99_ms))
        .unwrap_or_else(|| "–".into())
}

pub fn table(results: &[Measurement]) -> String {
    let mut out = String::new();
    let mut groups: Vec<(String, usize)> = Vec::new();
    for m in results.iter().filter(|m| m.scenario != "stack") {
        if !groups.contains(&(m.database.clone(), m.articles)) {
            groups.push((m.database.clone(), m.articles));
        }
    }
    let smallest = |database: &str| {
        groups
            .iter()
            .filter(|(d, _)| d == database)
            .map(|(_, a)| *a)
            .min()
    };
    for (database, articles) in &groups {
        let _ = writeln!(out, "\n{database}, {articles} articles (req/s; p99 ms)");
        let _ = writeln!(
            out,
            "| scenario | REST | gRPC | gRPC÷REST | peer | REST÷peer | postgres alone | REST÷postgres | REST kept vs {} articles | p99 REST | p99 gRPC |",
            smallest(database).unwrap_or(0)
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
        for scenario in [
            "tags",
            "list",
            "list-by-tag",
            "feed",
            "article",
            "create",
            "favorite",
        ] {
            let get = |target: &str| find(results, database, *articles, scenario, target);
            let rest = get("conduit-rest");
            if rest.is_none() {
                continue;
            }
            let grpc = get("conduit-grpc");
            let base = smallest(database)
                .and_then(|a| find(results, database, a, scenario, "conduit-rest"));
            let _ = writeln!(
                out,
                "| {scenario} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                rate(rest),
                rate(grpc),
                ratio(grpc, rest),
                rate(get("peer-rest")),
                ratio(rest, get("peer-rest")),
                rate(get("postgres")),
                ratio(rest, get("postgres")),
                ratio(rest, base),
                p99(rest),
                p99(grpc),
            );
        }
    }
    let full = results.iter().find(|m| m.target == "stack-full");
    let bare = results.iter().find(|m| m.target == "stack-bare");
    if full.is_some() || bare.is_some() {
        let p99_ratio = match (full, bare) {
            (Some(f), Some(b)) if b.outcome.p99_ms > 0.0 => {
                format!("{:.2}×", f.outcome.p99_ms / b.outcome.p99_ms)
            }
            _ => "–".into(),
        };
        let _ = writeln!(
            out,
            "\nstack cost, one trivial handler\n| full stack | bare | full÷bare | p99 full | p99 bare | p99 full÷bare |\n|---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {} |",
            rate(full),
            rate(bare),
            ratio(full, bare),
            p99(full),
            p99(bare),
            p99_ratio
        );
    }
    out
}

/// What the figures were measured on.
pub fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    serde_json::json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    })
}
