//! Every tier this machine has against an f64 product of the same bf16-rounded inputs; a tier
//! the machine lacks is reported as skipped (stderr), never as passed by another tier.

use super::*;

#[test]
fn rounding_is_nearest_even() {
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
    assert_eq!(from_bf16(to_bf16(1.0 + 1.0 / 256.0)), 1.0);
    // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties go to 1 + 2^-6.
    assert_eq!(from_bf16(to_bf16(1.0 + 3.0 / 256.0)), 1.0 + 1.0 / 64.0);
    // Above the halfway point rounds up, below rounds down.
    assert_eq!(
        from_bf16(to_bf16(1.0 + 1.0 / 256.0 + 1e-6)),
        1.0 + 1.0 / 128.0
    );
    assert_eq!(from_bf16(to_bf16(-(1.0 + 1.0 / 256.0 - 1e-6))), -1.0);
    assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    // Subnormals flush to signed zero, as the hardware conversion does.
    assert_eq!(to_bf16(1e-40), 0);
    assert_eq!(to_bf16(-1e-40), 0x8000);
    assert_eq!(from_bf16(to_bf16(f32::MIN_POSITIVE)), f32::MIN_POSITIVE);
}

/// Values with every rounding case: exact, ties (both directions), above/below halfway,
/// large and small exponents, signs.
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let j = i.wrapping_mul(7919).wrapping_add(seed * 104_729);
            match j % 4 {
                0 => 1.0 + (2 * (j % 64) + 1) as f32 / 256.0, // a tie
                1 => -((j as f32 * 0.377).sin() * 3.0),
                2 => (j as f32 * 0.119).cos() * 1e-3,
                _ => ((j % 17) as f32 - 8.0) / 8.0,
            }
        })
        .collect()
}

#[test]
fn round_into_matches_to_bf16_bit_for_bit() {
    let mut src = values(2000, 1);
    src.extend([
        0.0,
        -0.0,
        1e-40,
        -1e-40,
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        3.0e38,
    ]);
    for len in [0, 1, 15, 16, 17, 31, 32, 33, 100, src.len()] {
        let mut dst = vec![7u16; len];
        round_into(&src[..len], &mut dst);
        for (i, (&d, &s)) in dst.iter().zip(&src).enumerate() {
            assert_eq!(d, to_bf16(s), "len {len}, element {i}: {s:e}");
        }
    }
    let mut nan = [0u16; 1];
    round_into(&[f32::NAN], &mut nan);
    assert!(from_bf16(nan[0]).is_nan());
    // A slice large enough to be split over the threads.
    let big: Vec<f32> = (0..(1 << 20) + 37)
        .map(|i| (i as f32 * 0.001).sin())
        .collect();
    let out = to_bf16_vec(&big);
    assert!(out.iter().zip(&big).all(|(&d, &s)| d == to_bf16(s)));
}

fn transpose<T: Copy + Default>(x: &[T], r: usize, c: usize) -> Vec<T> {
    let mut t = vec![T::default(); r * c];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = x[i * c + j];
        }
    }
    t
}

/// Checks `tier` on one shape: all four transpose cases, f32 and bf16 data, accumulate off
/// and on (into a C with a row stride wider than n).
fn check_tier(tier: Tier, m: usize, n: usize, k: usize) {
    let a = values(m * k, 3);
    let b = values(k * n, 5);
    let (ab, bb) = (to_bf16_vec(&a), to_bf16_vec(&b));
    // f64 product of the rounded inputs, and Σ|a·b| to scale the tolerance.
    let mut want = vec![0f64; m * n];
    let mut mag = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            for p in 0..k {
                let x = from_bf16(ab[i * k + p]) as f64 * from_bf16(bb[p * n + j]) as f64;
                want[i * n + j] += x;
                mag[i * n + j] += x.abs();
            }
        }
    }
    let (at, bt) = (transpose(&a, m, k), transpose(&b, k, n));
    let (abt, bbt) = (transpose(&ab, m, k), transpose(&bb, k, n));
    let ldc = n + 3;
    for bf16_data in [false, true] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let ad = match (bf16_data, ta) {
                (false, false) => Data::F32(&a),
                (false, true) => Data::F32(&at),
                (true, false) => Data::Bf16(&ab),
                (true, true) => Data::Bf16(&abt),
            };
            let bd = match (bf16_data, tb) {
                (false, false) => Data::F32(&b),
                (false, true) => Data::F32(&bt),
                (true, false) => Data::Bf16(&bb),
                (true, true) => Data::Bf16(&bbt),
            };
            let ao = if ta {
                Operand16::t(ad, m)
            } else {
                Operand16::new(ad, k)
            };
            let bo = if tb {
                Operand16::t(bd, k)
            } else {
                Operand16::new(bd, n)
            };
            let mut c = vec![0.5f32; (m - 1) * ldc + n];
            let what = format!(
                "{} {m}x{n}x{k} trans ({ta},{tb}) bf16 data {bf16_data}",
                tier.name()
            );
            for (accumulate, base) in [(false, 0.0), (true, 1.0)] {
                if accumulate {
                    for i in 0..m {
                        for j in 0..n {
                            c[i * ldc + j] = want[i * n + j] as f32;
                        }
                    }
                    // `want` again is added on top.
                }
                matmul_bf16_on(tier, &mut c, ldc, ao, bo, m, n, k, accumulate);
                for i in 0..m {
                    for j in 0..n {
                        let w = (1.0 + base) * want[i * n + j];
                        let got = c[i * ldc + j] as f64;
                        let tol = 2e-5 * (mag[i * n + j] + w.abs()) + 1e-30;
                        assert!(
                            (got - w).abs() <= tol,
                            "{what} acc {accumulate} ({i},{j}): {got} vs {w}"
                        );
                    }
                    // The padding beyond n is never written.
                    if i + 1 < m {
                        assert!(c[i * ldc + n..(i + 1) * ldc].iter().all(|&x| x == 0.5));
                    }
                }
            }
        }
    }
}

const SHAPES: [(usize, usize, usize); 10] = [
    (1, 1, 1),
    (1, 37, 5),
    (5, 7, 300),
    (37, 29, 41),
    (13, 70, 1),
    (61, 50, 95),
    (33, 33, 33),
    (130, 100, 1100),
    (200, 65, 34),
    (17, 300, 513),
];

fn check_all(tier: Tier) {
    if hardware_tier() < tier {
        eprintln!(
            "SKIPPED: bf16 tier {} is not available on this CPU (best: {}); not tested here",
            tier.name(),
            hardware_tier().name()
        );
        return;
    }
    for (m, n, k) in SHAPES {
        check_tier(tier, m, n, k);
    }
}

#[test]
fn tier_f32_matches_f64_of_rounded_inputs() {
    check_all(Tier::F32);
}

#[test]
fn tier_avx512_bf16_matches_f64_of_rounded_inputs() {
    check_all(Tier::Avx512Bf16);
}

#[test]
fn tier_amx_matches_f64_of_rounded_inputs() {
    check_all(Tier::Amx);
}

#[test]
fn tiers_agree_with_each_other() {
    // Same rounded inputs on every tier the machine has: equal up to f32 summation order.
    let (m, n, k) = (70, 90, 600);
    let a = values(m * k, 11);
    let b = values(n * k, 13);
    let mut outs = Vec::new();
    for t in [Tier::F32, Tier::Avx512Bf16, Tier::Amx] {
        if hardware_tier() < t {
            eprintln!("SKIPPED: tier {} not on this CPU", t.name());
            continue;
        }
        let mut c = vec![0f32; m * n];
        let ao = Operand16::new(Data::F32(&a), k);
        let bo = Operand16::t(Data::F32(&b), k);
        matmul_bf16_on(t, &mut c, n, ao, bo, m, n, k, false);
        outs.push((t, c));
    }
    let (t0, c0) = &outs[0];
    for (t, c) in &outs[1..] {
        for (x, y) in c.iter().zip(c0) {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "{} vs {}: {x} {y}",
                t.name(),
                t0.name()
            );
        }
    }
}

#[test]
fn matmul_p_bf16_rounds_and_f32_does_not() {
    // 1 + 2^-8 rounds to 1 in bf16: the bf16 product is exactly k, the f32 one is not.
    let k = 64;
    let a = vec![1.0 + 1.0 / 256.0; k];
    let b = vec![1.0f32; k];
    for (prec, want) in [
        (Precision::Bf16, k as f32),
        (Precision::F32, k as f32 * (1.0 + 1.0 / 256.0)),
    ] {
        let mut c = [0f32; 1];
        let (ao, bo) = (Operand::new(&a, k), Operand::new(&b, 1));
        matmul_p(&mut c, 1, ao, bo, 1, 1, k, false, prec);
        assert!((c[0] - want).abs() < 1e-4, "{prec:?}: {} vs {want}", c[0]);
    }
}

#[test]
fn zero_k_clears_or_keeps_c() {
    for t in [Tier::F32, Tier::Avx512Bf16, Tier::Amx] {
        let mut c = vec![3f32; 6];
        let e: [f32; 0] = [];
        let (ao, bo) = (
            Operand16::new(Data::F32(&e), 0),
            Operand16::new(Data::F32(&e), 3),
        );
        matmul_bf16_on(t, &mut c, 3, ao, bo, 2, 3, 0, true);
        assert_eq!(c, vec![3.0; 6]);
        matmul_bf16_on(t, &mut c, 3, ao, bo, 2, 3, 0, false);
        assert_eq!(c, vec![0.0; 6]);
    }
}

#[test]
fn tier_names_parse_and_forcing_only_lowers() {
    for t in [Tier::F32, Tier::Avx512Bf16, Tier::Amx] {
        assert_eq!(Tier::parse(t.name()), Ok(t));
    }
    assert!(Tier::parse("avx2")
        .unwrap_err()
        .contains("amx, avx512-bf16 or f32"));
    assert_eq!(lower(Tier::Avx512Bf16, Tier::Amx), Tier::Avx512Bf16);
    assert_eq!(lower(Tier::Amx, Tier::F32), Tier::F32);
    assert_eq!(lower(Tier::F32, Tier::Amx), Tier::F32);
    // GRPO_BF16_TIER: unset/empty keeps the hardware's, a name lowers, a bad name is an error
    // naming the variable.
    assert_eq!(tier_for(Tier::Amx, None), Ok(Tier::Amx));
    assert_eq!(tier_for(Tier::Amx, Some("")), Ok(Tier::Amx));
    assert_eq!(
        tier_for(Tier::Amx, Some("avx512-bf16")),
        Ok(Tier::Avx512Bf16)
    );
    assert_eq!(
        tier_for(Tier::Avx512Bf16, Some("AMX")),
        Ok(Tier::Avx512Bf16)
    );
    assert_eq!(tier_for(Tier::Amx, Some("f32")), Ok(Tier::F32));
    let e = tier_for(Tier::Amx, Some("fast")).unwrap_err();
    assert!(
        e.contains("GRPO_BF16_TIER=fast") && e.contains("expected"),
        "{e}"
    );
    // force_tier never raises above the hardware, and the active tier follows it.
    let before = tier();
    assert_eq!(force_tier(Tier::F32), Tier::F32);
    assert_eq!(tier(), Tier::F32);
    assert_eq!(force_tier(Tier::Amx), hardware_tier());
    force_tier(before);
}

#[test]
fn detection_is_consistent_with_cpu_flags() {
    let hw = hardware_tier();
    eprintln!(
        "bf16 hardware tier on this CPU: {} (avx512-bf16: {}, AMX usable: {})",
        hw.name(),
        has_avx512_bf16(),
        amx_usable()
    );
    assert_eq!(hw >= Tier::Avx512Bf16, has_avx512_bf16());
    if hw == Tier::Amx {
        assert!(amx_usable());
    }
}
