//! `grpo bench gemm` end to end: the f32 and bf16 products report their dtype and the tier
//! they ran, `GRPO_BF16_TIER` and `--tier` lower the tier (never above the CPU's), and bad
//! names stop with a clear error. (No timing assertions.)

use std::process::Command;

use grpo::model::kernels::bf16::{hardware_tier, Tier};

fn grpo(args: &[&str], env: Option<&str>) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_grpo"));
    c.args(args).env("RAYON_NUM_THREADS", "2");
    match env {
        Some(v) => c.env("GRPO_BF16_TIER", v),
        None => c.env_remove("GRPO_BF16_TIER"),
    };
    c.output().expect("run grpo")
}

fn gemm(extra: &[&str], env: Option<&str>) -> serde_json::Value {
    let mut args = vec![
        "bench", "gemm", "--m", "40", "--n", "70", "--k", "33", "--repeat", "1", "--json",
    ];
    args.extend_from_slice(extra);
    let out = grpo(&args, env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn bf16_reports_the_tier_it_ran_and_forcing_lowers_it() {
    let hw = hardware_tier();
    eprintln!("hardware bf16 tier: {}", hw.name());
    let f = gemm(&[], None);
    assert_eq!(
        (f["dtype"].as_str(), f["tier"].as_str()),
        (Some("f32"), Some("f32"))
    );
    let b = gemm(&["--dtype", "bf16"], None);
    assert_eq!(b["dtype"], "bf16");
    assert_eq!(b["tier"].as_str(), Some(hw.name()));
    assert!(b["gflops"].as_f64().unwrap() > 0.0);
    // The environment variable and the flag both lower the tier.
    let e = gemm(&["--dtype", "bf16"], Some("f32"));
    assert_eq!(e["tier"], "f32");
    let t = gemm(&["--dtype", "bfloat16", "--tier", "f32"], None);
    assert_eq!(t["tier"], "f32");
    let lowered = gemm(&["--dtype", "bf16", "--tier", "avx512-bf16"], None);
    assert_eq!(
        lowered["tier"].as_str(),
        Some(hw.min(Tier::Avx512Bf16).name())
    );
    // Never above the CPU's.
    let amx = gemm(&["--dtype", "bf16"], Some("amx"));
    assert_eq!(amx["tier"].as_str(), Some(hw.name()));
}

#[test]
fn bad_tier_names_are_errors() {
    let out = grpo(
        &["bench", "gemm", "--m", "4", "--n", "4", "--k", "4"],
        Some("turbo"),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GRPO_BF16_TIER=turbo") && err.contains("amx, avx512-bf16 or f32"),
        "{err}"
    );
    let out = grpo(
        &["bench", "gemm", "--dtype", "bf16", "--tier", "turbo"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tier"));
}
