//! `latency.svg` and `rate.svg`: per-operation latency over time and throughput over
//! time, with the nemesis windows shaded (plotters, SVG backend only: text is drawn by
//! the browser, so no font files are needed and the files have no external asset).
//!
//! - latency: one dot per completed operation at its invocation time, height = time to
//!   its completion (log scale, ms), coloured by outcome (ok / info / fail);
//! - rate: completions per second in [`RATE_BUCKET`] buckets, one line per outcome.
//!
//! Operations still pending at the end are not drawn (they have no latency).

use std::collections::HashMap;

use plotters::prelude::*;

use super::config::FaultKind;
use super::nemesis::Window;
use super::recorder::{Actor, Record};
use crate::history::EventType;

/// Width of a rate bucket, seconds.
pub const RATE_BUCKET: f64 = 1.0;
/// Size of each plot, pixels.
pub const PLOT_SIZE: (u32, u32) = (1100, 480);
/// Shortest latency the log axis shows, ms.
pub const MIN_LATENCY_MS: f64 = 0.1;

/// One completed operation.
#[derive(Debug, Clone, PartialEq)]
pub struct OpPoint {
    /// Invocation time, seconds since the start.
    pub invoke_s: f64,
    /// Completion time, seconds since the start.
    pub complete_s: f64,
    /// Completion type (ok, fail or info).
    pub outcome: EventType,
    /// The function.
    pub f: String,
}

impl OpPoint {
    /// Invocation to completion, ms.
    pub fn latency_ms(&self) -> f64 {
        ((self.complete_s - self.invoke_s) * 1e3).max(MIN_LATENCY_MS)
    }
}

/// Pair every client invocation with its completion.
pub fn op_points(records: &[Record]) -> Vec<OpPoint> {
    let mut pending: HashMap<u64, &Record> = HashMap::new();
    let mut points = Vec::new();
    for r in records {
        let Actor::Client(p) = r.actor else { continue };
        if r.kind == EventType::Invoke {
            pending.insert(p, r);
        } else if let Some(inv) = pending.remove(&p) {
            points.push(OpPoint {
                invoke_s: inv.time_ns as f64 / 1e9,
                complete_s: r.time_ns as f64 / 1e9,
                outcome: r.kind,
                f: r.f.clone(),
            });
        }
    }
    points
}

/// The colour of a fault kind's shading.
pub fn fault_colour(kind: FaultKind) -> RGBColor {
    match kind {
        FaultKind::Kill => RGBColor(214, 39, 40),
        FaultKind::Pause => RGBColor(148, 103, 189),
        FaultKind::Partition => RGBColor(255, 127, 14),
        FaultKind::Latency => RGBColor(31, 119, 180),
        FaultKind::Clock => RGBColor(23, 190, 207),
        FaultKind::Membership => RGBColor(140, 86, 75),
    }
}

fn outcome_colour(kind: EventType) -> RGBColor {
    match kind {
        EventType::Ok => RGBColor(44, 160, 44),
        EventType::Info => RGBColor(230, 171, 2),
        _ => RGBColor(200, 30, 30),
    }
}

const OUTCOMES: [EventType; 3] = [EventType::Ok, EventType::Info, EventType::Fail];

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The latency plot as an SVG document.
pub fn latency_svg(
    points: &[OpPoint],
    windows: &[Window],
    end_s: f64,
    title: &str,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let x_max = end_s.max(1.0);
        let y_max = points.iter().map(OpPoint::latency_ms).fold(10.0, f64::max) * 2.0;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, (MIN_LATENCY_MS..y_max).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("time since start (s)")
            .y_desc("latency (ms, log)")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        shade(&mut chart, windows, MIN_LATENCY_MS, y_max, y_max / 1.6)?;
        for outcome in OUTCOMES {
            let colour = outcome_colour(outcome);
            let dots: Vec<&OpPoint> = points.iter().filter(|p| p.outcome == outcome).collect();
            let count = dots.len();
            chart
                .draw_series(dots.into_iter().map(|p| {
                    Circle::new((p.invoke_s, p.latency_ms()), 2, colour.mix(0.6).filled())
                }))
                .map_err(err)?
                .label(format!("{} ({count})", outcome.name()))
                .legend(move |(x, y)| Circle::new((x, y), 4, colour.filled()));
        }
        legend(&mut chart)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The throughput plot as an SVG document.
pub fn rate_svg(
    points: &[OpPoint],
    windows: &[Window],
    end_s: f64,
    title: &str,
) -> Result<String, String> {
    let buckets = (end_s / RATE_BUCKET).ceil().max(1.0) as usize;
    let mut series: Vec<(EventType, Vec<f64>)> =
        OUTCOMES.iter().map(|o| (*o, vec![0.0; buckets])).collect();
    for p in points {
        let b = ((p.complete_s / RATE_BUCKET) as usize).min(buckets - 1);
        if let Some((_, counts)) = series.iter_mut().find(|(o, _)| *o == p.outcome) {
            counts[b] += 1.0 / RATE_BUCKET;
        }
    }
    let y_max = series.iter().flat_map(|(_, c)| c.iter().copied()).fold(1.0, f64::max) * 1.25;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..(buckets as f64 * RATE_BUCKET), 0f64..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("time since start (s)")
            .y_desc("completions per second")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        shade(&mut chart, windows, 0.0, y_max, y_max * 0.97)?;
        for (outcome, counts) in &series {
            let colour = outcome_colour(*outcome);
            let total: f64 = counts.iter().sum::<f64>() * RATE_BUCKET;
            chart
                .draw_series(LineSeries::new(
                    counts.iter().enumerate().map(|(i, c)| ((i as f64 + 0.5) * RATE_BUCKET, *c)),
                    colour.stroke_width(2),
                ))
                .map_err(err)?
                .label(format!("{} ({total:.0})", outcome.name()))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                });
        }
        legend(&mut chart)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

type Chart<'a, 'b, Y> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>;

fn shade<Y>(
    chart: &mut Chart<'_, '_, Y>,
    windows: &[Window],
    y_lo: f64,
    y_hi: f64,
    y_text: f64,
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64>,
{
    chart
        .draw_series(windows.iter().map(|w| {
            Rectangle::new(
                [(w.start_s, y_lo), (w.end_s, y_hi)],
                fault_colour(w.kind).mix(0.15).filled(),
            )
        }))
        .map_err(err)?;
    chart
        .draw_series(windows.iter().map(|w| {
            Text::new(
                w.kind.name().to_string(),
                (w.start_s, y_text),
                ("sans-serif", 12).into_font().color(&fault_colour(w.kind)),
            )
        }))
        .map_err(err)?;
    Ok(())
}

fn legend<'a, 'b: 'a, Y>(chart: &mut Chart<'a, 'b, Y>) -> Result<(), String>
where
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;

    fn ev(p: u64, kind: EventType, t_ms: u64) -> Record {
        Record {
            actor: Actor::Client(p),
            kind,
            f: "read".into(),
            key: None,
            value: Json::Null,
            time_ns: t_ms * 1_000_000,
            error: None,
            node: None,
        }
    }

    fn sample() -> (Vec<OpPoint>, Vec<Window>) {
        let records = vec![
            ev(0, EventType::Invoke, 100),
            ev(1, EventType::Invoke, 150),
            ev(0, EventType::Ok, 105),
            ev(1, EventType::Info, 1_650),
            ev(2, EventType::Invoke, 2_000),
        ];
        let windows = vec![Window {
            index: 0,
            kind: FaultKind::Partition,
            detail: "halves".into(),
            start_s: 0.5,
            end_s: 1.5,
            errors: vec![],
        }];
        (op_points(&records), windows)
    }

    #[test]
    fn invocations_pair_with_completions_and_pending_ones_are_left_out() {
        let (points, _) = sample();
        assert_eq!(points.len(), 2);
        assert!((points[0].latency_ms() - 5.0).abs() < 1e-6);
        assert_eq!(points[1].outcome, EventType::Info);
    }

    #[test]
    fn plots_are_self_contained_svg_with_shaded_windows() {
        let (points, windows) = sample();
        for svg in [
            latency_svg(&points, &windows, 3.0, "latency").expect("latency"),
            rate_svg(&points, &windows, 3.0, "rate").expect("rate"),
        ] {
            assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
            assert!(svg.contains("partition"));
            assert!(!svg.contains("href=\"http"), "no external asset");
            assert!(svg.contains("fill-opacity=\"0.15\"") || svg.contains("opacity=\"0.15\""));
        }
    }
}
