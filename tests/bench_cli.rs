//! `grpo bench train` end to end on small shapes: one JSON line with consistent fields for
//! each mode, and clear errors for bad arguments. (No timing assertions: speed is measured by
//! benches/peers/run.sh, not by tests.)

use std::process::Command;

fn grpo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_grpo"))
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .expect("run grpo")
}

fn bench(extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "bench", "train", "--shape", "bench", "--batch", "2", "--seq", "9", "--repeat", "1",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = grpo(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line: {stdout}");
    serde_json::from_str(lines[0]).unwrap()
}

#[test]
fn each_mode_prints_one_consistent_json_line() {
    for (extra, what) in [
        (&[][..], "fwd+bwd"),
        (&["--forward-only"][..], "forward"),
        (&["--adamw"][..], "fwd+bwd+adamw"),
    ] {
        let j = bench(extra);
        assert_eq!(j["what"], what);
        assert_eq!(j["shape"], "bench");
        assert_eq!(j["params"], 8_427_008, "the forward_backward bench shape");
        let best = j["best_s"].as_f64().unwrap();
        let tps = j["tokens_per_s"].as_f64().unwrap();
        assert!(best > 0.0);
        assert!((tps * best - 18.0).abs() < 1e-6, "tokens/s = B*T / best_s");
        let rss = j["peak_rss_gb"].as_f64().unwrap();
        assert!(rss > 0.01 && rss < 8.0, "peak RSS {rss} GB");
    }
}

#[test]
fn qwen_shape_has_the_real_parameter_count() {
    // Only the config: building 494M random weights is left to the benchmark itself.
    use grpo::cli::bench::{shape_parameters, Shape};
    assert_eq!(
        shape_parameters(Shape::Qwen25_05b).unwrap(),
        494_032_768,
        "Qwen2.5-0.5B has 494,032,768 parameters"
    );
    assert_eq!(shape_parameters(Shape::Bench).unwrap(), 8_427_008);
}

#[test]
fn bad_arguments_are_clear_errors() {
    let out = grpo(&["bench", "train", "--batch", "0", "--json"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--batch"), "{err}");
    let out = grpo(&["bench", "train", "--shape", "gpt2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("qwen2.5-0.5b"));
    let out = grpo(&["bench", "train", "--adamw", "--forward-only"]);
    assert!(!out.status.success());
}

#[test]
fn lora_trains_only_what_the_rank_implies_and_micro_batches_are_reported() {
    // Bench shape: hidden 256, intermediate 704, 6 layers, 8 heads / 2 kv heads of 32, so per
    // layer q 256→256, k 256→64, v 256→64, o 256→256, gate 256→704, up 256→704, down 704→256:
    // Σ (in + out) = 4544, and LoRA of rank r trains r · 4544 · 6 parameters.
    let j = bench(&["--adamw", "--lora-r", "4", "--micro-batch", "1"]);
    assert_eq!(j["what"], "fwd+bwd+adamw");
    assert_eq!(j["lora_r"], 4);
    assert_eq!(j["trainable_params"], 4 * 4544 * 6);
    assert_eq!(j["params"], 8_427_008, "the base is unchanged");
    assert_eq!(j["micro_batch"], 1);
    assert!(
        (j["tokens_per_s"].as_f64().unwrap() * j["best_s"].as_f64().unwrap() - 18.0).abs() < 1e-6
    );
    let full = bench(&[]);
    assert_eq!(full["trainable_params"], 8_427_008);
    assert_eq!(full["lora_r"], 0);
    assert_eq!(
        full["micro_batch"], 2,
        "auto: the whole (small) batch in one pass"
    );
}

#[test]
fn bf16_and_model_config_run_and_report_what_they_ran() {
    // --dtype bf16: mixed precision, with the kernel tier named.
    let j = bench(&["--dtype", "bf16", "--adamw"]);
    assert_eq!(j["dtype"], "bf16");
    assert_eq!(j["what"], "fwd+bwd+adamw");
    assert!(
        ["amx", "avx512-bf16", "f32"].contains(&j["tier"].as_str().unwrap()),
        "{j}"
    );
    assert_eq!(bench(&[])["dtype"], "f32");

    // --model-config: the architecture of a config.json (the tiny-qwen2 fixture: tied, 2 layers
    // of hidden 64), random weights, its parameter count.
    let cfg = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny-qwen2/config.json");
    let out = grpo(&[
        "bench",
        "train",
        "--model-config",
        cfg.to_str().unwrap(),
        "--batch",
        "2",
        "--seq",
        "9",
        "--repeat",
        "1",
        "--dtype",
        "bf16",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    let model = grpo::model::ModelConfig::from_file(&cfg).unwrap();
    let want = grpo::trainer::memory::num_parameters(&model);
    // 512·64 tied embedding + 2 layers · (q 64·64+64, k and v 32·64+32, o 64·64, MLP 3·64·128,
    // two norms 2·64) + final norm 64.
    assert_eq!(want, 107_072);
    assert_eq!(j["params"], want);
    assert_eq!(j["shape"], cfg.display().to_string());

    // A bad file is an error naming it; --shape and --model-config exclude each other.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("config.json");
    std::fs::write(&bad, "{\"model_type\": \"qwen2\", \"hidden_size\": ").unwrap();
    for path in [bad.clone(), tmp.path().join("missing.json")] {
        let out = grpo(&["bench", "train", "--model-config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(path.to_str().unwrap()) && !err.contains("panicked"),
            "{err}"
        );
    }
    let out = grpo(&[
        "bench",
        "train",
        "--shape",
        "bench",
        "--model-config",
        cfg.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let out = grpo(&["bench", "train", "--dtype", "f16"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dtype"));
}
