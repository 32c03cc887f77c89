//! Training curves of one or more runs (`grpo plot`): one panel per metric, runs overlaid, runs
//! that differ only in their seed drawn as mean ± std.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use crate::analysis::font::ensure_fonts;
use crate::analysis::ImageFormat;
use crate::config::{Config, LossType, ProcessWeighting};
use crate::record::{read_metrics, read_summary, StepMetrics, TrainSummary};

/// Panels drawn when `--metrics` is not given (those without data in any run are left out).
pub const DEFAULT_METRICS: &[&str] = &[
    "reward",
    "accuracy",
    "eval/accuracy",
    "completions/mean_length",
    "kl",
    "entropy",
    "clip_fraction",
    "process/non_trivial_fraction",
    "process/mean_num_process_sets",
    "process/mean_path_depth",
    "process/mean_intermediate_proportion",
];

/// One training run: its `metrics.jsonl` and, when present, `summary.json`.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    /// The directory's name, the default legend label.
    pub name: String,
    /// One record per logged step.
    pub metrics: Vec<StepMetrics>,
    /// `summary.json` of a `grpo train` run (None when absent, or for other runs such as SFT).
    pub summary: Option<TrainSummary>,
}

impl Run {
    /// Loads a run directory (or the `metrics.jsonl` inside one).
    pub fn load(path: &Path) -> Result<Run> {
        let dir = if path.is_file() {
            path.parent().unwrap_or(Path::new(".")).to_path_buf()
        } else {
            path.to_path_buf()
        };
        let metrics = read_metrics(&dir)?;
        let summary = if dir.join("summary.json").is_file() {
            match read_summary(&dir) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("{e:#}: plotting without it");
                    None
                }
            }
        } else {
            None
        };
        let name = dir
            .canonicalize()
            .ok()
            .as_deref()
            .and_then(Path::file_name)
            .or_else(|| dir.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        Ok(Run {
            dir,
            name,
            metrics,
            summary,
        })
    }

    /// `(step, value)` of a numeric metric, in log order; non-finite values are skipped.
    ///
    /// `eval/accuracy` also gets the summary's validation accuracy before (step 0) and after training.
    pub fn series(&self, key: &str) -> Vec<(f64, f64)> {
        let mut pts: Vec<(f64, f64)> = self
            .metrics
            .iter()
            .filter_map(|m| Some((m.step as f64, m.get(key)?)))
            .filter(|(_, v)| v.is_finite())
            .collect();
        if key == "eval/accuracy" {
            if let Some(s) = &self.summary {
                if let Some(v) = s.initial_val_accuracy {
                    if !pts.iter().any(|p| p.0 == 0.0) {
                        pts.insert(0, (0.0, v));
                    }
                }
                let steps = s.steps as f64;
                if let (Some(v), true) = (s.final_val_accuracy, s.steps > 0) {
                    if !pts.iter().any(|p| p.0 == steps) {
                        pts.push((steps, v));
                    }
                }
            }
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        pts
    }

    /// Whether any logged step has a numeric value for `key`.
    pub fn has_metric(&self, key: &str) -> bool {
        self.metrics.iter().any(|m| m.has(key))
    }

    /// The resolved config with the seed and the output directory removed: runs with equal keys
    /// are repetitions of one experiment.
    pub fn config_key(&self) -> Option<Value> {
        let mut cfg = self.summary.as_ref()?.config.clone();
        if cfg.is_null() {
            return None;
        }
        // Through `Config` and back, so that a run recorded before a key existed compares equal
        // to a newer run that has the key at its default (a config that no longer parses is
        // compared as recorded).
        if let Some(full) = serde_json::from_value::<Config>(cfg.clone())
            .ok()
            .and_then(|c| serde_json::to_value(c).ok())
        {
            cfg = full;
        }
        if let Some(t) = cfg.get_mut("train").and_then(Value::as_object_mut) {
            t.remove("seed");
        }
        if let Some(o) = cfg.get_mut("output").and_then(Value::as_object_mut) {
            o.remove("dir");
        }
        Some(cfg)
    }

    pub fn seed(&self) -> Option<u64> {
        self.summary.as_ref()?.seed()
    }

    /// `loss_type`, with `+λ` when process weighting is added to a non-λ loss.
    pub fn loss_label(&self) -> Option<String> {
        let s = self.summary.as_ref()?;
        Some(match (s.loss_type, s.process_weighting) {
            (LossType::LambdaGrpo, _) | (_, ProcessWeighting::None) => s.loss_type.to_string(),
            (t, ProcessWeighting::Lambda) => format!("{t}+λ"),
        })
    }
}

/// One legend entry: a run, or the runs of one config over several seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    /// Indices into the runs.
    pub runs: Vec<usize>,
}

/// Groups runs whose configs differ only in seed (and output dir), when `aggregate_seeds`.
pub fn group_runs(runs: &[Run], aggregate_seeds: bool) -> Vec<Series> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let key = if aggregate_seeds {
            r.config_key()
        } else {
            None
        };
        let found = key.as_ref().and_then(|k| {
            groups
                .iter()
                .position(|g| runs[g[0]].config_key().as_ref() == Some(k))
        });
        match found {
            Some(g) => groups[g].push(i),
            None => groups.push(vec![i]),
        }
    }
    let mut series: Vec<Series> = groups
        .into_iter()
        .map(|g| {
            let label = if g.len() == 1 {
                runs[g[0]].name.clone()
            } else {
                let seeds: Vec<String> = g
                    .iter()
                    .map(|&i| runs[i].seed().map_or("?".into(), |s| s.to_string()))
                    .collect();
                format!(
                    "{} (mean ± std, seeds {})",
                    runs[g[0]].loss_label().unwrap_or_else(|| "run".into()),
                    seeds.join(",")
                )
            };
            Series { label, runs: g }
        })
        .collect();
    // Colliding labels (a sweep's grid points share a loss) get the first run's folder name
    // without its `-seedN` suffix, which `grpo sweep` makes the grid point's name; where that
    // still collides, the whole path.
    for disambiguate in [run_stem as fn(&Run) -> String, |r: &Run| {
        r.dir.display().to_string()
    }] {
        let labels: Vec<String> = series.iter().map(|s| s.label.clone()).collect();
        for s in &mut series {
            if labels.iter().filter(|l| **l == s.label).count() > 1 {
                s.label = format!("{} [{}]", s.label, disambiguate(&runs[s.runs[0]]));
            }
        }
    }
    series
}

/// A run folder's name without a trailing `-seed<N>`.
fn run_stem(run: &Run) -> String {
    let name = run
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rsplit_once("-seed") {
        Some((stem, seed)) if !seed.is_empty() && seed.bytes().all(|b| b.is_ascii_digit()) => {
            stem.to_string()
        }
        _ => name,
    }
}

/// A curve ready to draw: per step the mean over the series' runs, and the std when several.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// `(step, mean, std)`; `std` is the sample std over runs (0 with one run at that step).
    pub points: Vec<(f64, f64, f64)>,
    /// Number of runs aggregated (a band is drawn when > 1).
    pub runs: usize,
}

/// Trailing moving average over the last `window` steps (`window` ≤ 1: unchanged). The
/// window is in steps, not points, so a sparse series (validation every 50 steps) is left as
/// it is instead of being averaged with its whole history.
pub fn smooth(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    if window <= 1 {
        return points.to_vec();
    }
    (0..points.len())
        .map(|i| {
            let x = points[i].0;
            let lo = points[..=i].partition_point(|p| p.0 <= x - window as f64);
            let w = &points[lo..=i];
            (
                points[i].0,
                w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64,
            )
        })
        .collect()
}

/// The curve of `key` for a group of runs, each smoothed before averaging; `None` without data.
pub fn curve(runs: &[&Run], key: &str, window: usize) -> Option<Curve> {
    let mut by_step: BTreeMap<u64, (f64, Vec<f64>)> = BTreeMap::new();
    let mut with_data = 0;
    for r in runs {
        let pts = smooth(&r.series(key), window);
        if !pts.is_empty() {
            with_data += 1;
        }
        for (x, y) in pts {
            by_step
                .entry(x.to_bits())
                .or_insert_with(|| (x, Vec::new()))
                .1
                .push(y);
        }
    }
    if with_data == 0 {
        return None;
    }
    let mut points: Vec<(f64, f64, f64)> = by_step
        .into_values()
        .map(|(x, ys)| {
            let n = ys.len() as f64;
            let m = ys.iter().sum::<f64>() / n;
            let sd = if ys.len() > 1 {
                (ys.iter().map(|y| (y - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
            } else {
                0.0
            };
            (x, m, sd)
        })
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    Some(Curve {
        points,
        runs: with_data,
    })
}

/// What to draw.
#[derive(Debug, Clone)]
pub struct PlotOptions {
    /// Metric keys; a key missing from the logs is also tried as `process/<key>`.
    /// Empty: [`DEFAULT_METRICS`] that have data.
    pub metrics: Vec<String>,
    /// Moving-average window (≤ 1: none).
    pub smooth: usize,
    /// Draw runs that differ only in seed as one mean ± std curve.
    pub aggregate_seeds: bool,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            metrics: Vec::new(),
            smooth: 1,
            aggregate_seeds: true,
        }
    }
}

/// What was drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotSummary {
    /// Resolved metric keys, one per panel.
    pub panels: Vec<String>,
    /// Legend labels.
    pub labels: Vec<String>,
    pub width: u32,
    pub height: u32,
}

/// Draws the grid of panels to `out` (`.png` or `.svg`).
pub fn plot_runs(runs: &[Run], opts: &PlotOptions, out: &Path) -> Result<PlotSummary> {
    if runs.is_empty() {
        bail!("no runs to plot");
    }
    let format = ImageFormat::from_path(out)?;
    let panels = resolve_metrics(runs, &opts.metrics)?;
    let series = group_runs(runs, opts.aggregate_seeds);
    let curves: Vec<Vec<Option<Curve>>> = panels
        .iter()
        .map(|key| {
            series
                .iter()
                .map(|s| {
                    let rs: Vec<&Run> = s.runs.iter().map(|&i| &runs[i]).collect();
                    curve(&rs, key, opts.smooth)
                })
                .collect()
        })
        .collect();
    let labels: Vec<String> = series.iter().map(|s| s.label.clone()).collect();
    let grid = Grid::new(panels.len(), &labels);
    let size = (grid.width, grid.height);
    ensure_fonts()?;
    let title = format!(
        "{} run{}{}",
        runs.len(),
        if runs.len() == 1 { "" } else { "s" },
        if opts.smooth > 1 {
            format!(", moving average over {} steps", opts.smooth)
        } else {
            String::new()
        }
    );
    match format {
        ImageFormat::Png => {
            let root = BitMapBackend::new(out, size).into_drawing_area();
            draw_grid(&root, &grid, &title, &panels, &labels, &curves)?;
            root.present().map_err(|e| anyhow!("{e}"))
        }
        ImageFormat::Svg => {
            let root = SVGBackend::new(out, size).into_drawing_area();
            draw_grid(&root, &grid, &title, &panels, &labels, &curves)?;
            root.present().map_err(|e| anyhow!("{e}"))
        }
    }
    .with_context(|| format!("writing {}", out.display()))?;
    Ok(PlotSummary {
        panels,
        labels,
        width: grid.width,
        height: grid.height,
    })
}

/// The metric keys to draw: explicit ones must have data somewhere; defaults without data are dropped.
fn resolve_metrics(runs: &[Run], wanted: &[String]) -> Result<Vec<String>> {
    let has = |k: &str| runs.iter().any(|r| r.has_metric(k));
    if wanted.is_empty() {
        let keys: Vec<String> = DEFAULT_METRICS
            .iter()
            .filter(|k| has(k))
            .map(|k| k.to_string())
            .collect();
        if keys.is_empty() {
            bail!(
                "none of the default metrics ({}) is in {}; choose some with --metrics",
                DEFAULT_METRICS.join(", "),
                runs[0].dir.join("metrics.jsonl").display()
            );
        }
        return Ok(keys);
    }
    wanted
        .iter()
        .map(|k| {
            let k = k.trim();
            if has(k) {
                return Ok(k.to_string());
            }
            let p = format!("process/{k}");
            if has(&p) {
                return Ok(p);
            }
            let mut avail: Vec<String> = runs
                .iter()
                .flat_map(|r| r.metrics.iter())
                .flat_map(StepMetrics::numeric_keys)
                .collect();
            avail.sort();
            avail.dedup();
            Err(anyhow!(
                "--metrics {k}: no run logs a numeric {k:?}; available: {}",
                avail.join(", ")
            ))
        })
        .collect()
}

const PANEL_W: u32 = 480;
const PANEL_H: u32 = 320;
const LEGEND_ROW: u32 = 22;

/// Tab10 colours, cycled.
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

struct Grid {
    cols: u32,
    rows: u32,
    width: u32,
    height: u32,
    /// Legend entries per row.
    legend_rows: Vec<Vec<usize>>,
    header: u32,
}

impl Grid {
    fn new(panels: usize, labels: &[String]) -> Grid {
        let cols = panels.clamp(1, 3) as u32;
        let rows = (panels as u32).div_ceil(cols).max(1);
        let width = cols * PANEL_W;
        // Wrap legend entries (swatch + label) into rows of the image width.
        let mut legend_rows: Vec<Vec<usize>> = vec![Vec::new()];
        let mut x = 20u32;
        for (i, l) in labels.iter().enumerate() {
            let w = 40 + 8 * l.chars().count() as u32;
            if x + w > width && legend_rows.last().is_some_and(|r| !r.is_empty()) {
                legend_rows.push(Vec::new());
                x = 20;
            }
            if let Some(r) = legend_rows.last_mut() {
                r.push(i);
            }
            x += w;
        }
        let header = 34 + LEGEND_ROW * legend_rows.len() as u32;
        Grid {
            cols,
            rows,
            width,
            height: header + rows * PANEL_H,
            legend_rows,
            header,
        }
    }
}

fn draw_grid<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    grid: &Grid,
    title: &str,
    panels: &[String],
    labels: &[String],
    curves: &[Vec<Option<Curve>>],
) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the plot: {e}");
    root.fill(&WHITE).map_err(err)?;
    let (head, body) = root.split_vertically(grid.header);
    head.draw(&Text::new(
        title.to_string(),
        (20, 8),
        ("sans-serif", 18).into_font().color(&BLACK),
    ))
    .map_err(err)?;
    let font = ("sans-serif", 14).into_font().color(&BLACK);
    for (r, row) in grid.legend_rows.iter().enumerate() {
        let y = 34 + r as i32 * LEGEND_ROW as i32 + 8;
        let mut x = 20i32;
        for &i in row {
            let c = COLOURS[i % COLOURS.len()];
            head.draw(&PathElement::new(
                vec![(x, y), (x + 28, y)],
                c.stroke_width(3),
            ))
            .map_err(err)?;
            head.draw(&Text::new(labels[i].clone(), (x + 34, y - 8), font.clone()))
                .map_err(err)?;
            x += 40 + 8 * labels[i].chars().count() as i32;
        }
    }
    let cells = body.split_evenly((grid.rows as usize, grid.cols as usize));
    for ((key, cs), cell) in panels.iter().zip(curves).zip(cells) {
        draw_panel(&cell, key, cs).map_err(|e| anyhow!("drawing panel {key}: {e}"))?;
    }
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    key: &str,
    curves: &[Option<Curve>],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let pts = || curves.iter().flatten().flat_map(|c| c.points.iter());
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, m, sd) in pts() {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(m - sd);
        y1 = y1.max(m + sd);
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 <= x0 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    // Accuracies start at 0, so the height of a curve reads as a rate; the top follows the data
    // (a 0.1 → 0.2 gain would be a flat line on a [0, 1] axis).
    if key.contains("accuracy") && y0 >= 0.0 && y1 <= 1.0 {
        y0 = 0.0;
    }
    let pad = if y1 > y0 {
        0.05 * (y1 - y0)
    } else {
        0.1 * y0.abs().max(0.5)
    };
    let (y0, y1) = (y0 - pad, y1 + pad);
    let mut chart = ChartBuilder::on(area)
        .caption(key, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(32)
        .y_label_area_size(58)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| tick(*x))
        .y_label_formatter(&|y| tick(*y))
        .x_labels(6)
        .y_labels(6)
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 13))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (i, c) in curves.iter().enumerate() {
        let Some(c) = c else { continue };
        let colour = COLOURS[i % COLOURS.len()];
        if c.runs > 1 && c.points.len() > 1 {
            let band: Vec<(f64, f64)> = c
                .points
                .iter()
                .map(|&(x, m, sd)| (x, m + sd))
                .chain(c.points.iter().rev().map(|&(x, m, sd)| (x, m - sd)))
                .collect();
            chart.draw_series(std::iter::once(Polygon::new(
                band,
                colour.mix(0.2).filled(),
            )))?;
        }
        chart.draw_series(LineSeries::new(
            c.points.iter().map(|&(x, m, _)| (x, m)),
            colour.stroke_width(2),
        ))?;
        if c.points.len() <= 30 || key.starts_with("eval/") {
            chart.draw_series(
                c.points
                    .iter()
                    .map(|&(x, m, _)| Circle::new((x, m), 3, colour.filled())),
            )?;
        }
    }
    Ok(())
}

/// Axis tick text: integers without a decimal point, no `-0`, short decimals.
fn tick(v: f64) -> String {
    if v.abs() < 1e-12 {
        return "0".into();
    }
    if v.fract() == 0.0 && v.abs() < 1e9 {
        return format!("{}", v as i64);
    }
    if v.abs() < 1e-3 || v.abs() >= 1e6 {
        return format!("{v:.1e}");
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}
