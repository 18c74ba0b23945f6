//! What a comparison run measured ([`Results`], saved as `results.json`) and how it is
//! shown: a Markdown table with ratios and the targets checked
//! ([`markdown`]), and SVG plots ([`write_plots`]): throughput against concurrency
//! and the latency CDF per workload (plotters, SVG backend only: no fonts needed).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use meridian::client::bench::{BenchReport, CdfPoint, LatencySummary};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// The two stores, in the order the table shows them.
pub const TARGETS: [&str; 2] = ["etcd", "meridian"];
/// Size of each plot, pixels.
pub const PLOT_SIZE: (u32, u32) = (900, 480);
/// Shortest latency the CDF's log axis shows, ms.
pub const MIN_PLOT_LATENCY_MS: f64 = 0.05;

/// One measured point: one target, one workload, one setting of the knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// "etcd" or "meridian".
    pub target: String,
    /// Workload label (put, get-lin, get-ser, cas, cas-hot, txn, mixed).
    pub workload: String,
    /// Concurrent clients (tasks).
    pub concurrency: usize,
    /// Value size, bytes.
    pub value_size: usize,
    /// Distinct keys.
    pub keys: u64,
    /// Cluster size.
    pub nodes: usize,
    /// Completed ops per second.
    pub ops_per_sec: f64,
    /// Latency summary, ms.
    pub latency_ms: LatencySummary,
    /// Latency CDF, ms.
    pub latency_cdf: Vec<CdfPoint>,
    /// Failed ops.
    pub errors: u64,
    /// CAS/Txn compares that failed (completed ops).
    pub conflicts: u64,
    /// The first error message, if any.
    pub error_sample: Option<String>,
    /// CPU time of the store's processes (every node) per op, µs, warmup included pro
    /// rata (absent in results from before it was recorded).
    #[serde(default)]
    pub server_cpu_us_per_op: Option<f64>,
    /// The same for the load generator (this process).
    #[serde(default)]
    pub client_cpu_us_per_op: Option<f64>,
}

impl Point {
    /// The point of `report` for `workload` on a cluster of `nodes`.
    pub fn from_report(report: &BenchReport, workload: &str, nodes: usize) -> Self {
        Self {
            target: report.target.clone(),
            workload: workload.to_string(),
            concurrency: report.concurrency,
            value_size: report.value_size,
            keys: report.keys,
            nodes,
            ops_per_sec: report.ops_per_sec,
            latency_ms: report.latency_ms,
            latency_cdf: report.latency_cdf.clone(),
            errors: report.errors,
            conflicts: report.conflicts,
            error_sample: report.error_samples.values().next().cloned(),
            server_cpu_us_per_op: None,
            client_cpu_us_per_op: None,
        }
    }

    fn knobs(&self) -> (String, usize, usize, u64, usize) {
        (self.workload.clone(), self.nodes, self.value_size, self.keys, self.concurrency)
    }
}

/// Memory and disk of one store after loading keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// "etcd" or "meridian".
    pub target: String,
    /// Cluster size.
    pub nodes: usize,
    /// Keys written before measuring.
    pub keys_loaded: u64,
    /// Their value size, bytes.
    pub value_size: usize,
    /// Load time, seconds.
    pub load_s: f64,
    /// Resident set size of each node, MiB.
    pub rss_mib: Vec<f64>,
    /// Disk usage (allocated blocks) of each node's data dir, MiB.
    pub disk_mib: Vec<f64>,
}

/// Everything one comparison run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// When the run started (UTC, RFC 3339).
    pub started_at: String,
    /// `/proc/loadavg` before the run.
    pub loadavg_before: String,
    /// `/proc/loadavg` after it.
    pub loadavg_after: String,
    /// CPU cores the machine has.
    pub cores: usize,
    /// `etcd --version`, first line.
    pub etcd_version: String,
    /// Measured seconds per point (after warmup).
    pub duration_s: f64,
    /// Warmup seconds per point.
    pub warmup_s: f64,
    /// Clients (connections) per target.
    pub clients: usize,
    /// Every measured point, in run order.
    pub points: Vec<Point>,
    /// Resource use after loading keys.
    pub resources: Vec<Resources>,
}

impl Results {
    /// The point of `target` with the knobs of `like`.
    fn find(&self, target: &str, like: &Point) -> Option<&Point> {
        self.points.iter().find(|p| p.target == target && p.knobs() == like.knobs())
    }

    /// The point of `target` for `workload` at `concurrency` on the base scenario
    /// (the smallest cluster, 100-byte values, the fewest keys).
    pub fn base_point(&self, target: &str, workload: &str, concurrency: usize) -> Option<&Point> {
        let nodes = self.points.iter().map(|p| p.nodes).min()?;
        let keys = self.points.iter().map(|p| p.keys).min()?;
        self.points.iter().find(|p| {
            p.target == target
                && p.workload == workload
                && p.concurrency == concurrency
                && p.nodes == nodes
                && p.value_size == 100
                && p.keys == keys
        })
    }

    /// Distinct (workload, nodes, value size, keys, concurrency) settings in run order.
    fn settings(&self) -> Vec<&Point> {
        let mut seen = BTreeSet::new();
        self.points.iter().filter(|p| seen.insert(p.knobs())).collect()
    }
}

fn ratio(meridian: f64, etcd: f64) -> String {
    if etcd > 0.0 {
        format!("{:.2}x", meridian / etcd)
    } else {
        "-".to_string()
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn bytes(n: usize) -> String {
    match n {
        n if n >= 1024 && n % 1024 == 0 => format!("{} KiB", n / 1024),
        n => format!("{n} B"),
    }
}

/// The Markdown report: run facts, the side-by-side table, resource use, and the
/// issue's targets with a verdict each.
pub fn markdown(r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Meridian vs etcd\n");
    let _ = writeln!(
        out,
        "Run {} on {} cores; {}; {:.0} s measured + {:.0} s warmup per point, {} clients per \
         target, interleaved etcd/Meridian per point.\n",
        r.started_at, r.cores, r.etcd_version, r.duration_s, r.warmup_s, r.clients
    );
    let _ = writeln!(
        out,
        "Load average (1/5/15 min, runnable/total, last pid) before: `{}`, after: `{}`.\n",
        r.loadavg_before.trim(),
        r.loadavg_after.trim()
    );
    out.push_str(&throughput_table(r));
    out.push_str(&cpu_table(r));
    if !r.resources.is_empty() {
        out.push_str(&resource_table(r));
    }
    out.push_str(&targets(r));
    out
}

/// CPU per operation of both stores at every point where it was recorded: what each
/// op costs the machine, which varies much less between runs than ops/s on a shared
/// or noisy host, and says which side is CPU-bound.
fn cpu_table(r: &Results) -> String {
    let rows: Vec<_> = r
        .settings()
        .into_iter()
        .filter_map(|s| {
            let (e, m) = (r.find(TARGETS[0], s)?, r.find(TARGETS[1], s)?);
            Some((s, e.server_cpu_us_per_op?, m.server_cpu_us_per_op?, e, m))
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "CPU time per op, µs (user + system, warmup included pro rata): the store's \
         processes on every node, and the load generator driving it.\n"
    );
    let _ = writeln!(
        out,
        "| workload | nodes | value | keys | clients | etcd servers | Meridian servers | \
         Meridian / etcd | etcd load generator | Meridian load generator |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let us = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
    for (s, e_cpu, m_cpu, e, m) in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {} |",
            s.workload,
            s.nodes,
            bytes(s.value_size),
            s.keys,
            s.concurrency,
            e_cpu,
            m_cpu,
            ratio(m_cpu, e_cpu),
            us(e.client_cpu_us_per_op),
            us(m.client_cpu_us_per_op),
        );
    }
    out.push('\n');
    out
}

fn throughput_table(r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| workload | nodes | value | keys | clients | etcd ops/s | Meridian ops/s | ratio | \
         etcd p50 ms | Meridian p50 ms | etcd p99 ms | Meridian p99 ms | etcd p999 ms | \
         Meridian p999 ms | errors e/m |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for s in r.settings() {
        let (Some(e), Some(m)) = (r.find(TARGETS[0], s), r.find(TARGETS[1], s)) else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.2} | \
             {:.2} | {:.2} | {}/{} |",
            s.workload,
            s.nodes,
            bytes(s.value_size),
            s.keys,
            s.concurrency,
            e.ops_per_sec,
            m.ops_per_sec,
            ratio(m.ops_per_sec, e.ops_per_sec),
            e.latency_ms.p50,
            m.latency_ms.p50,
            e.latency_ms.p99,
            m.latency_ms.p99,
            e.latency_ms.p999,
            m.latency_ms.p999,
            e.errors,
            m.errors,
        );
    }
    out.push('\n');
    out
}

fn resource_table(r: &Results) -> String {
    let mut out = String::from(
        "## Resource use after loading keys\n\n| store | nodes | keys | value | load s | RSS \
         MiB per node | data dir MiB per node |\n|---|---:|---:|---:|---:|---|---|\n",
    );
    let list = |v: &[f64]| v.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(" / ");
    for x in &r.resources {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.1} | {} | {} |",
            x.target,
            x.nodes,
            x.keys_loaded,
            bytes(x.value_size),
            x.load_s,
            list(&x.rss_mib),
            list(&x.disk_mib)
        );
    }
    out.push('\n');
    out
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    }
}

fn targets(r: &Results) -> String {
    let mut out =
        String::from("## Targets (issue #10)\n\n| target | measured | verdict |\n|---|---|---|\n");
    let pair =
        |w: &str, c: usize| Some((r.base_point("etcd", w, c)?, r.base_point("meridian", w, c)?));
    let mut row = |name: &str, measured: String, ok: Option<bool>| {
        let _ = writeln!(out, "| {name} | {measured} | {} |", verdict(ok));
    };
    let throughput = |w: &str, c: usize, factor: f64| match pair(w, c) {
        Some((e, m)) => (
            format!(
                "{:.0} vs {:.0} ops/s = {}",
                m.ops_per_sec,
                e.ops_per_sec,
                ratio(m.ops_per_sec, e.ops_per_sec)
            ),
            Some(m.ops_per_sec >= factor * e.ops_per_sec),
        ),
        None => ("-".into(), None),
    };
    let (text, ok) = throughput("put", 64, 1.5);
    let p99 = pair("put", 64).map(|(e, m)| (e.latency_ms.p99, m.latency_ms.p99));
    let p99_text = p99.map_or(String::new(), |(e, m)| format!("; p99 {m:.1} vs {e:.1} ms"));
    let ok = ok.zip(p99).map(|(ok, (e, m))| ok && m <= e);
    row("put at 64 clients: >= 1.5x ops/s, p99 <= etcd's", format!("{text}{p99_text}"), ok);
    let (text, ok) = throughput("get-lin", 64, 2.0);
    row("linearizable get at 64: >= 2x", text, ok);
    let (text, ok) = throughput("get-ser", 64, 1.5);
    row("serializable get at 64: >= 1.5x", text, ok);
    let (text, ok) = throughput("cas", 64, 1.5);
    row("CAS on distinct keys at 64: >= 1.5x", text, ok);
    for w in ["put", "get-lin"] {
        let (text, ok) = match pair(w, 1) {
            Some((e, m)) => (
                format!("p50 {:.2} vs {:.2} ms", m.latency_ms.p50, e.latency_ms.p50),
                Some(m.latency_ms.p50 <= e.latency_ms.p50),
            ),
            None => ("-".into(), None),
        };
        row(&format!("{w} at 1 client: p50 <= etcd's"), text, ok);
    }
    // Meridian's largest load (the first cluster size on a tie) against etcd's of the same
    // size: a cluster of another size would compare different amounts of replication.
    let meridian = r.resources.iter().filter(|x| x.target == "meridian").reduce(|a, b| {
        if b.keys_loaded > a.keys_loaded {
            b
        } else {
            a
        }
    });
    let etcd = meridian.and_then(|m| {
        r.resources
            .iter()
            .find(|x| x.target == "etcd" && x.nodes == m.nodes && x.keys_loaded == m.keys_loaded)
    });
    let (text, ok) = match (etcd, meridian) {
        (Some(e), Some(m)) => (
            format!(
                "{} keys, {} nodes: RSS {:.0} vs {:.0} MiB, disk {:.0} vs {:.0} MiB (mean per node)",
                m.keys_loaded,
                m.nodes,
                mean(&m.rss_mib),
                mean(&e.rss_mib),
                mean(&m.disk_mib),
                mean(&e.disk_mib)
            ),
            Some(mean(&m.rss_mib) <= mean(&e.rss_mib) && mean(&m.disk_mib) <= mean(&e.disk_mib)),
        ),
        _ => ("-".into(), None),
    };
    row("RSS and data dir size per node: <= etcd's", text, ok);
    out.push('\n');
    out
}

fn colour(target: &str) -> RGBColor {
    if target == "etcd" {
        RGBColor(66, 133, 244)
    } else {
        RGBColor(219, 68, 55)
    }
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("plot: {e}")
}

/// Throughput against concurrency for `workload` on the base scenario, one line per
/// target (x: log2 of the concurrency).
pub fn throughput_svg(r: &Results, workload: &str) -> anyhow::Result<String> {
    let series: Vec<(&str, Vec<(f64, f64)>)> = TARGETS
        .iter()
        .map(|t| {
            let mut pts: Vec<(f64, f64)> = r
                .points
                .iter()
                .filter(|p| p.target == *t && p.workload == workload)
                .filter_map(|p| r.base_point(t, workload, p.concurrency))
                .map(|p| ((p.concurrency as f64).log2(), p.ops_per_sec))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            pts.dedup_by(|a, b| a.0 == b.0);
            (*t, pts)
        })
        .collect();
    let x_max = series.iter().flat_map(|s| s.1.iter().map(|p| p.0)).fold(1.0, f64::max);
    let y_max = series.iter().flat_map(|s| s.1.iter().map(|p| p.1)).fold(1.0, f64::max) * 1.15;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{workload}: throughput vs concurrency"), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max + 0.5, 0f64..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("concurrent clients")
            .x_label_formatter(&|x| format!("{:.0}", x.exp2()))
            .y_desc("ops/s")
            .draw()
            .map_err(err)?;
        for (t, pts) in series {
            let c = colour(t);
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(err)?
                .label(t)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The latency CDF of `workload` at `concurrency` on the base scenario, one line per
/// target (x: latency, log scale; y: quantile).
pub fn cdf_svg(r: &Results, workload: &str, concurrency: usize) -> anyhow::Result<String> {
    let series: Vec<(&str, Vec<(f64, f64)>)> = TARGETS
        .iter()
        .filter_map(|t| {
            let p = r.base_point(t, workload, concurrency)?;
            let pts =
                p.latency_cdf.iter().map(|c| (c.ms.max(MIN_PLOT_LATENCY_MS), c.quantile)).collect();
            Some((*t, pts))
        })
        .collect();
    let x_max = series.iter().flat_map(|s| s.1.iter().map(|p| p.0)).fold(1.0, f64::max) * 1.5;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{workload} at {concurrency} clients: latency CDF"),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((MIN_PLOT_LATENCY_MS..x_max).log_scale(), 0f64..1.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("latency (ms, log)")
            .y_desc("fraction of ops at or below")
            .draw()
            .map_err(err)?;
        for (t, pts) in series {
            let c = colour(t);
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .map_err(err)?
                .label(t)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Write `results.json`, `results.md`, `throughput-<workload>.svg` and
/// `cdf-<workload>-c<N>.svg` (at `cdf_concurrency`) into `dir`.
pub fn write_all(r: &Results, dir: &Path, cdf_concurrency: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))
    };
    write("results.json", &serde_json::to_string_pretty(r)?)?;
    write("results.md", &markdown(r))?;
    let workloads: BTreeSet<&str> = r.points.iter().map(|p| p.workload.as_str()).collect();
    for w in workloads {
        write(&format!("throughput-{w}.svg"), &throughput_svg(r, w)?)?;
        if r.base_point("meridian", w, cdf_concurrency).is_some() {
            write(&format!("cdf-{w}-c{cdf_concurrency}.svg"), &cdf_svg(r, w, cdf_concurrency)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(target: &str, workload: &str, concurrency: usize, ops: f64, p99: f64) -> Point {
        Point {
            target: target.into(),
            workload: workload.into(),
            concurrency,
            value_size: 100,
            keys: 10_000,
            nodes: 3,
            ops_per_sec: ops,
            latency_ms: LatencySummary { count: 10, p50: p99 / 2.0, p99, ..Default::default() },
            latency_cdf: vec![
                CdfPoint { quantile: 0.0, ms: 0.1 },
                CdfPoint { quantile: 0.5, ms: p99 / 2.0 },
                CdfPoint { quantile: 1.0, ms: p99 },
            ],
            errors: 0,
            conflicts: 0,
            error_sample: None,
            server_cpu_us_per_op: None,
            client_cpu_us_per_op: None,
        }
    }

    fn sample() -> Results {
        let mut r =
            Results { cores: 2, etcd_version: "etcd Version: 3.4.23".into(), ..Default::default() };
        for c in [1, 64] {
            r.points.push(point("etcd", "put", c, 1000.0 * c as f64, 20.0));
            r.points.push(point("meridian", "put", c, 2000.0 * c as f64, 10.0));
            r.points.push(point("etcd", "get-lin", c, 1000.0, 5.0));
            r.points.push(point("meridian", "get-lin", c, 1500.0, 4.0));
        }
        r.resources.push(Resources {
            target: "etcd".into(),
            nodes: 3,
            keys_loaded: 1000,
            value_size: 100,
            load_s: 1.0,
            rss_mib: vec![50.0, 60.0, 70.0],
            disk_mib: vec![64.0; 3],
        });
        r
    }

    #[test]
    fn table_shows_ratios_and_target_verdicts() {
        let md = markdown(&sample());
        assert!(md.contains("| put | 3 | 100 B | 10000 | 64 | 64000 | 128000 | 2.00x |"), "{md}");
        assert!(md.contains("| put at 64 clients: >= 1.5x ops/s, p99 <= etcd's | 128000 vs 64000 ops/s = 2.00x; p99 10.0 vs 20.0 ms | met |"), "{md}");
        assert!(
            md.contains("| linearizable get at 64: >= 2x | 1500 vs 1000 ops/s = 1.50x | NOT met |"),
            "{md}"
        );
        assert!(md.contains("| serializable get at 64: >= 1.5x | - | not measured |"), "{md}");
        assert!(md.contains("| etcd | 3 | 1000 | 100 B | 1.0 | 50.0 / 60.0 / 70.0 |"), "{md}");
    }

    #[test]
    fn cpu_per_op_is_tabled_where_both_stores_recorded_it() {
        let mut r = sample();
        assert!(!markdown(&r).contains("CPU time per op"), "no table without CPU figures");
        for p in r.points.iter_mut().filter(|p| p.workload == "put" && p.concurrency == 64) {
            let etcd = p.target == "etcd";
            p.server_cpu_us_per_op = Some(if etcd { 200.0 } else { 150.0 });
            p.client_cpu_us_per_op = Some(if etcd { 40.0 } else { 30.0 });
        }
        let md = markdown(&r);
        assert!(
            md.contains("| put | 3 | 100 B | 10000 | 64 | 200 | 150 | 0.75x | 40 | 30 |"),
            "{md}"
        );
        assert!(!md.contains("| put | 3 | 100 B | 10000 | 1 | 2"), "only recorded points: {md}");
        // Results written before the fields existed still load.
        let mut json = serde_json::to_value(&r).expect("json");
        for p in json["points"].as_array_mut().expect("points") {
            let p = p.as_object_mut().expect("point");
            p.remove("server_cpu_us_per_op");
            p.remove("client_cpu_us_per_op");
        }
        let old: Results = serde_json::from_value(json).expect("old results load");
        assert!(old.points.iter().all(|p| p.server_cpu_us_per_op.is_none()));
    }

    #[test]
    fn resources_are_compared_at_the_same_cluster_size() {
        let mut r = sample();
        let res = |target: &str, nodes: usize, mib: f64| Resources {
            target: target.into(),
            nodes,
            keys_loaded: 1000,
            value_size: 100,
            load_s: 1.0,
            rss_mib: vec![mib; nodes],
            disk_mib: vec![mib; nodes],
        };
        // etcd at 3 nodes: 50-70 MiB RSS, 64 MiB disk (sample); Meridian at 3 and at 5;
        // etcd at 5 much larger. The verdict pairs the 3-node rows.
        r.resources.push(res("meridian", 3, 100.0));
        r.resources.push(res("etcd", 5, 500.0));
        r.resources.push(res("meridian", 5, 10.0));
        let md = markdown(&r);
        assert!(
            md.contains("1000 keys, 3 nodes: RSS 100 vs 60 MiB, disk 100 vs 64 MiB (mean per node) | NOT met |"),
            "{md}"
        );
    }

    #[test]
    fn plots_are_svg_with_both_targets() {
        let r = sample();
        let t = throughput_svg(&r, "put").expect("throughput plot");
        assert!(t.starts_with("<svg") && t.contains("etcd") && t.contains("meridian"), "{t}");
        let c = cdf_svg(&r, "put", 64).expect("cdf plot");
        assert!(c.starts_with("<svg") && c.contains("latency CDF"));
        let dir = tempfile::tempdir().expect("tempdir");
        write_all(&r, dir.path(), 64).expect("write");
        for f in ["results.json", "results.md", "throughput-put.svg", "cdf-get-lin-c64.svg"] {
            assert!(dir.path().join(f).is_file(), "{f} missing");
        }
        let back: Results = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("results.json")).expect("read"),
        )
        .expect("parse");
        assert_eq!(back, r);
    }
}
