//! `grpo plot`: seed grouping, mean ± std and smoothing on synthetic runs (exact numbers), and
//! PNG / SVG pictures of real `grpo train` runs (decoded PNG pixels, SVG legend text).

use std::io::Read;
use std::path::{Path, PathBuf};

use grpo::analysis::plot::{curve, group_runs, smooth};
use grpo::analysis::{plot_runs, PlotOptions, Run};
use serde_json::json;

mod common;
use common::{grpo, write_train_config};

/// A fake run directory: `reward_mean` per step, and a summary whose config differs by `loss`/`seed`.
fn fake_run(dir: &Path, name: &str, loss: &str, seed: u64, rewards: &[f64]) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let lines: Vec<String> = rewards
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut m = json!({"step": i + 1, "reward_mean": r, "kl": 0.1 * i as f64});
            if i == 1 {
                m["eval/accuracy"] = json!(0.5);
            }
            m.to_string()
        })
        .collect();
    std::fs::write(d.join("metrics.jsonl"), lines.join("\n") + "\n").unwrap();
    let summary = json!({
        "steps": rewards.len(),
        "initial_val_accuracy": 0.25,
        "final_val_accuracy": 0.75,
        "loss_type": loss,
        "process_weighting": if loss == "lambda_grpo" { "lambda" } else { "none" },
        "seed": seed,
        "config": {"loss": {"type": loss}, "train": {"seed": seed, "max_steps": 3},
                   "output": {"dir": d.display().to_string()}},
    });
    std::fs::write(d.join("summary.json"), summary.to_string()).unwrap();
    d
}

/// Runs recorded before a config key existed group with newer runs that carry it at its default,
/// and not with runs that set it to something else.
#[test]
fn seed_groups_fill_missing_keys_with_their_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let old = fake_run(tmp.path(), "old", "lambda_grpo", 1, &[1.0, 2.0]);
    let with_key = |name: &str, seed: u64, coef: f64| {
        let d = fake_run(tmp.path(), name, "lambda_grpo", seed, &[1.0, 2.0]);
        let path = d.join("summary.json");
        let mut s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        s["config"]["loss"]["entropy_coef"] = json!(coef);
        std::fs::write(&path, s.to_string()).unwrap();
        d
    };
    let new = with_key("new", 2, 0.0);
    let other = with_key("other", 3, 0.1);
    let runs: Vec<Run> = [&old, &new, &other]
        .iter()
        .map(|d| Run::load(d).unwrap())
        .collect();
    let series = group_runs(&runs, true);
    assert_eq!(series.len(), 2, "{series:?}");
    assert_eq!(series[0].runs, vec![0, 1]);
    assert_eq!(series[1].runs, vec![2]);
}

#[test]
fn seed_groups_mean_std_and_smoothing() {
    let tmp = tempfile::tempdir().unwrap();
    let a = fake_run(tmp.path(), "lam-a", "lambda_grpo", 1, &[1.0, 2.0, 3.0]);
    let b = fake_run(tmp.path(), "lam-b", "lambda_grpo", 2, &[3.0, 6.0, 9.0]);
    let c = fake_run(tmp.path(), "plain", "grpo", 1, &[0.0, 0.0, 1.0]);
    let runs: Vec<Run> = [&a, &b, &c].iter().map(|d| Run::load(d).unwrap()).collect();

    let series = group_runs(&runs, true);
    assert_eq!(series.len(), 2);
    assert_eq!(series[0].runs, vec![0, 1]);
    assert_eq!(series[0].label, "lambda_grpo (mean ± std, seeds 1,2)");
    assert_eq!(series[1].runs, vec![2]);
    assert_eq!(series[1].label, "plain");
    let separate = group_runs(&runs, false);
    assert_eq!(separate.len(), 3);
    assert_eq!(separate[1].label, "lam-b");

    let pair = [&runs[0], &runs[1]];
    let cv = curve(&pair, "reward_mean", 1).unwrap();
    assert_eq!(cv.runs, 2);
    let want = [
        (1.0, 2.0, 2f64.sqrt()),
        (2.0, 4.0, 8f64.sqrt()),
        (3.0, 6.0, 18f64.sqrt()),
    ];
    assert_eq!(cv.points.len(), 3);
    for (got, want) in cv.points.iter().zip(&want) {
        assert_eq!(got.0, want.0);
        assert!((got.1 - want.1).abs() < 1e-12 && (got.2 - want.2).abs() < 1e-12);
    }
    // Smoothing happens per run, before averaging: a → 1, 1.5, 2.5; b → 3, 4.5, 7.5.
    let sm = curve(&pair, "reward_mean", 2).unwrap();
    let means: Vec<f64> = sm.points.iter().map(|p| p.1).collect();
    assert_eq!(means, vec![2.0, 3.0, 5.0]);
    assert_eq!(
        smooth(&[(1.0, 4.0), (2.0, 0.0), (3.0, 2.0), (4.0, 4.0)], 3),
        vec![(1.0, 4.0), (2.0, 2.0), (3.0, 2.0), (4.0, 2.0)]
    );
    // The window counts steps: points 50 steps apart are not averaged together.
    assert_eq!(
        smooth(&[(0.0, 0.1), (50.0, 0.2), (100.0, 0.3), (102.0, 0.5)], 10),
        vec![(0.0, 0.1), (50.0, 0.2), (100.0, 0.3), (102.0, 0.4)]
    );
    // Validation accuracy gets the summary's before/after values at steps 0 and `steps`.
    let ev = curve(&[&runs[2]], "eval/accuracy", 1).unwrap();
    let pts: Vec<(f64, f64)> = ev.points.iter().map(|p| (p.0, p.1)).collect();
    assert_eq!(pts, vec![(0.0, 0.25), (2.0, 0.5), (3.0, 0.75)]);
    assert!(curve(&[&runs[2]], "no_such_metric", 1).is_none());

    // Explicit metrics, `process/` optional; unknown ones are an error naming what exists.
    let out = tmp.path().join("two.svg");
    let opts = PlotOptions {
        metrics: vec!["reward_mean".into(), "kl".into()],
        ..PlotOptions::default()
    };
    let s = plot_runs(&runs, &opts, &out).unwrap();
    assert_eq!(s.panels, vec!["reward_mean", "kl"]);
    assert_eq!((s.width, s.height), (960, 34 + 22 + 320));
    let bad = PlotOptions {
        metrics: vec!["nope".into()],
        ..PlotOptions::default()
    };
    let err = format!("{:#}", plot_runs(&runs, &bad, &out).unwrap_err());
    assert!(err.contains("nope") && err.contains("reward"), "{err}");
    let err = format!(
        "{:#}",
        plot_runs(&runs, &opts, &tmp.path().join("x.pdf")).unwrap_err()
    );
    assert!(err.contains(".png or .svg"), "{err}");
}

fn train(dir: &Path, name: &str, loss: &str, seed: u64) -> PathBuf {
    let out = dir.join(name);
    let (loss, seed) = (format!("{loss:?}"), seed.to_string());
    let path = write_train_config(
        dir,
        &format!("{name}.toml"),
        &out,
        &[
            ("sampling.max_completion_length", "8"),
            ("sampling.temperature", "0.7"),
            ("rewards.length_target", "6"),
            ("loss.type", &loss),
            ("loss.beta", "0.04"),
            ("train.max_steps", "3"),
            ("train.seed", &seed),
            ("eval.every", "2"),
            ("eval.limit", "2"),
            ("eval.max_completion_length", "4"),
        ],
    );
    let o = grpo(&["train", "--config", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// Decodes an 8-bit RGB or RGBA PNG: (width, height, RGB pixels).
fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<[u8; 3]>) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let (mut w, mut h, mut channels) = (0u32, 0u32, 0usize);
    let mut idat = Vec::new();
    let mut pos = 8;
    while pos + 8 <= bytes.len() {
        let len = be(&bytes[pos..]) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let data = &bytes[pos + 8..pos + 8 + len];
        match kind {
            b"IHDR" => {
                w = be(&data[0..]);
                h = be(&data[4..]);
                assert_eq!(data[8], 8, "bit depth");
                channels = match data[9] {
                    2 => 3,
                    6 => 4,
                    t => panic!("colour type {t}"),
                };
                assert_eq!(data[12], 0, "interlaced");
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        pos += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(idat.as_slice())
        .read_to_end(&mut raw)
        .unwrap();
    let stride = w as usize * channels;
    assert_eq!(raw.len(), h as usize * (stride + 1));
    let mut img = vec![0u8; h as usize * stride];
    for y in 0..h as usize {
        let filter = raw[y * (stride + 1)];
        let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
        for x in 0..stride {
            let a = if x >= channels {
                img[y * stride + x - channels]
            } else {
                0
            };
            let b = if y > 0 { img[(y - 1) * stride + x] } else { 0 };
            let c = if x >= channels && y > 0 {
                img[(y - 1) * stride + x - channels]
            } else {
                0
            };
            let pred = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                4 => {
                    let p = i16::from(a) + i16::from(b) - i16::from(c);
                    let (pa, pb, pc) = (
                        (p - i16::from(a)).abs(),
                        (p - i16::from(b)).abs(),
                        (p - i16::from(c)).abs(),
                    );
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("filter {f}"),
            };
            img[y * stride + x] = line[x].wrapping_add(pred);
        }
    }
    let px = img.chunks(channels).map(|p| [p[0], p[1], p[2]]).collect();
    (w, h, px)
}

#[test]
fn plot_real_runs_png_and_svg() {
    let tmp = tempfile::tempdir().unwrap();
    let l1 = train(tmp.path(), "lam-s1", "lambda_grpo", 1);
    let l2 = train(tmp.path(), "lam-s2", "lambda_grpo", 2);
    let g1 = train(tmp.path(), "grpo-s1", "grpo", 1);
    let dirs = [
        l1.to_str().unwrap(),
        l2.to_str().unwrap(),
        g1.to_str().unwrap(),
    ];

    let png = tmp.path().join("curves.png");
    let mut args = vec!["plot"];
    args.extend(dirs);
    args.extend(["--out", png.to_str().unwrap()]);
    let o = grpo(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    // All 11 default panels have data: 3 columns × 4 rows of 480×320, legend on one row.
    assert!(stdout.contains("11 panels"), "{stdout}");
    assert!(
        stdout.contains("lambda_grpo (mean ± std, seeds 1,2); grpo-s1"),
        "{stdout}"
    );
    let (w, h, px) = decode_png(&std::fs::read(&png).unwrap());
    assert_eq!((w, h), (1440, 34 + 22 + 4 * 320));
    assert!(stdout.contains("1440x1336"));
    let count = |c: [u8; 3]| px.iter().filter(|&&p| p == c).count();
    // Both series colours are drawn (legend swatches, lines, markers), text is dark grey/black.
    assert!(
        count([31, 119, 180]) > 500,
        "blue: {}",
        count([31, 119, 180])
    );
    assert!(
        count([255, 127, 14]) > 500,
        "orange: {}",
        count([255, 127, 14])
    );
    let white = count([255, 255, 255]);
    assert!(white < px.len() * 97 / 100 && white > px.len() / 2);
    // The band (blue at 20 % on white) is present too.
    let band = px
        .iter()
        .filter(|p| p[2] > 220 && p[0] > 200 && p[0] < 225 && p[1] > 220 && p[1] < 240)
        .count();
    assert!(band > 1000, "band pixels: {band}");

    let svg = tmp.path().join("curves.svg");
    let mut args = vec!["plot"];
    args.extend(dirs);
    args.extend([
        "--out",
        svg.to_str().unwrap(),
        "--separate",
        "--smooth",
        "2",
        "--metrics",
        "reward_mean,eval/accuracy,non_trivial_fraction",
    ]);
    let o = grpo(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"));
    for label in [
        "lam-s1",
        "lam-s2",
        "grpo-s1",
        "reward_mean",
        "eval/accuracy",
        "process/non_trivial_fraction",
        "moving average over 2 steps",
    ] {
        assert!(text.contains(label), "SVG lacks {label:?}");
    }
    assert!(
        text.matches("<polyline").count() >= 9,
        "one line per run and panel"
    );

    let o = grpo(&[
        "plot",
        dirs[0],
        "--out",
        svg.to_str().unwrap(),
        "--metrics",
        "bogus",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--metrics bogus"));
    let o = grpo(&[
        "plot",
        tmp.path().to_str().unwrap(),
        "--out",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("metrics.jsonl"));
}

/// Grid points of a sweep share a loss: their legend entries are told apart by the run folder
/// name without `-seedN` (the grid point's name in `grpo sweep`).
#[test]
fn grid_points_with_one_loss_get_their_sweep_names() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    for (name, n, seed) in [
        ("lam_n1-seed1", 1, 1),
        ("lam_n1-seed2", 1, 2),
        ("lam_n2-seed1", 2, 1),
        ("lam_n2-seed2", 2, 2),
    ] {
        let d = fake_run(tmp.path(), name, "lambda_grpo", seed, &[1.0, 2.0]);
        let path = d.join("summary.json");
        let mut summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        summary["config"]["rewards"] = json!({"tree_n": n});
        std::fs::write(&path, summary.to_string()).unwrap();
        dirs.push(d);
    }
    let runs: Vec<Run> = dirs.iter().map(|d| Run::load(d).unwrap()).collect();
    let labels: Vec<String> = group_runs(&runs, true)
        .into_iter()
        .map(|s| s.label)
        .collect();
    assert_eq!(
        labels,
        [
            "lambda_grpo (mean ± std, seeds 1,2) [lam_n1]",
            "lambda_grpo (mean ± std, seeds 1,2) [lam_n2]"
        ]
    );
}
