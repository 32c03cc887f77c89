//! Evaluation of parsed answers: exact rationals where possible, complex floats otherwise.
//!
//! Exact evaluation refuses (returns `None`) for anything irrational or too large: integer powers
//! only up to [`MAX_BITS`] bits of result, roots only of perfect powers, factorials up to 1000.
//! Complex evaluation handles everything else (`\sqrt{-4}`, `\log`, trig, `\pi`, `e`, `i`) and
//! binds free variables from an environment for randomized identity testing.

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

use super::parse::{Const, Expr, Fun};
use super::Fuel;

/// Largest exact intermediate (numerator + denominator bits); beyond it we fall back to floats.
pub const MAX_BITS: u64 = 20_000;

/// A minimal complex number (no extra dependency; only what the evaluator needs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct C64 {
    pub re: f64,
    pub im: f64,
}

impl C64 {
    pub const fn new(re: f64, im: f64) -> Self {
        Self { re, im }
    }
    pub const fn real(re: f64) -> Self {
        Self { re, im: 0.0 }
    }
    pub fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }
    pub fn is_finite(self) -> bool {
        self.re.is_finite() && self.im.is_finite()
    }
    fn add(self, o: Self) -> Self {
        Self::new(self.re + o.re, self.im + o.im)
    }
    fn sub(self, o: Self) -> Self {
        Self::new(self.re - o.re, self.im - o.im)
    }
    fn mul(self, o: Self) -> Self {
        if self.im == 0.0 && o.im == 0.0 {
            return Self::real(self.re * o.re);
        }
        Self::new(
            self.re * o.re - self.im * o.im,
            self.re * o.im + self.im * o.re,
        )
    }
    fn div(self, o: Self) -> Self {
        if self.im == 0.0 && o.im == 0.0 {
            return Self::real(self.re / o.re);
        }
        let d = o.re * o.re + o.im * o.im;
        Self::new(
            (self.re * o.re + self.im * o.im) / d,
            (self.im * o.re - self.re * o.im) / d,
        )
    }
    fn neg(self) -> Self {
        Self::new(-self.re, -self.im)
    }
    fn exp(self) -> Self {
        let r = self.re.exp();
        if self.im == 0.0 {
            return Self::real(r);
        }
        Self::new(r * self.im.cos(), r * self.im.sin())
    }
    fn ln(self) -> Self {
        Self::new(self.abs().ln(), self.im.atan2(self.re))
    }
    fn sqrt(self) -> Self {
        if self.im == 0.0 {
            return if self.re >= 0.0 {
                Self::real(self.re.sqrt())
            } else {
                Self::new(0.0, (-self.re).sqrt())
            };
        }
        let r = self.abs();
        let re = ((r + self.re) / 2.0).sqrt();
        let im = ((r - self.re) / 2.0).sqrt().copysign(self.im);
        Self::new(re, im)
    }
    fn powi(self, mut n: i64) -> Self {
        let inv = n < 0;
        n = n.abs();
        let mut base = self;
        let mut acc = Self::real(1.0);
        while n > 0 {
            if n & 1 == 1 {
                acc = acc.mul(base);
            }
            base = base.mul(base);
            n >>= 1;
        }
        if inv {
            Self::real(1.0).div(acc)
        } else {
            acc
        }
    }
    fn pow(self, w: Self) -> Self {
        if w.im == 0.0 && w.re.fract() == 0.0 && w.re.abs() <= 1024.0 {
            return self.powi(w.re as i64);
        }
        if self.im == 0.0 && w.im == 0.0 && self.re >= 0.0 {
            return Self::real(self.re.powf(w.re));
        }
        if self.re == 0.0 && self.im == 0.0 {
            return Self::real(0.0);
        }
        // Real odd roots of negative reals, as `\sqrt[3]{x}` does: (-8)^{2/3} = 4.
        if self.im == 0.0 && w.im == 0.0 {
            for q in [3.0f64, 5.0, 7.0, 9.0] {
                let p = w.re * q;
                if (p - p.round()).abs() < 1e-9 {
                    let mag = (-self.re).powf(w.re);
                    return Self::real(if p.round() as i64 % 2 == 0 { mag } else { -mag });
                }
            }
        }
        w.mul(self.ln()).exp()
    }
    fn sin(self) -> Self {
        Self::new(
            self.re.sin() * self.im.cosh(),
            self.re.cos() * self.im.sinh(),
        )
    }
    fn cos(self) -> Self {
        Self::new(
            self.re.cos() * self.im.cosh(),
            -self.re.sin() * self.im.sinh(),
        )
    }
}

/// Free variables of an expression, sorted and deduplicated.
pub fn free_vars(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::Var(v) => {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
        Expr::Num(_) | Expr::Dec(_) | Expr::Const(_) | Expr::Opaque(_) => {}
        Expr::Neg(a) | Expr::Func(_, a) | Expr::Percent(a) => free_vars(a, out),
        Expr::Add(a, b)
        | Expr::Sub(a, b)
        | Expr::Mul(a, b)
        | Expr::Div(a, b)
        | Expr::Pow(a, b)
        | Expr::Log(a, b)
        | Expr::Root(a, b)
        | Expr::Binom(a, b)
        | Expr::Pm(a, b) => {
            free_vars(a, out);
            free_vars(b, out);
        }
    }
}

/// Whether the expression has a piecewise function (`|x|`, floor, ceil), which positive
/// sample points alone cannot tell apart from its argument.
pub fn has_piecewise(e: &Expr) -> bool {
    match e {
        Expr::Func(Fun::Abs | Fun::Floor | Fun::Ceil, _) => true,
        Expr::Num(_) | Expr::Dec(_) | Expr::Var(_) | Expr::Const(_) | Expr::Opaque(_) => false,
        Expr::Neg(a) | Expr::Func(_, a) | Expr::Percent(a) => has_piecewise(a),
        Expr::Add(a, b)
        | Expr::Sub(a, b)
        | Expr::Mul(a, b)
        | Expr::Div(a, b)
        | Expr::Pow(a, b)
        | Expr::Log(a, b)
        | Expr::Root(a, b)
        | Expr::Binom(a, b)
        | Expr::Pm(a, b) => has_piecewise(a) || has_piecewise(b),
    }
}

/// Whether a decimal literal (an approximation) occurs anywhere in the expression.
pub fn has_decimal(e: &Expr) -> bool {
    match e {
        Expr::Dec(_) => true,
        Expr::Num(_) | Expr::Var(_) | Expr::Const(_) | Expr::Opaque(_) => false,
        Expr::Neg(a) | Expr::Func(_, a) | Expr::Percent(a) => has_decimal(a),
        Expr::Add(a, b)
        | Expr::Sub(a, b)
        | Expr::Mul(a, b)
        | Expr::Div(a, b)
        | Expr::Pow(a, b)
        | Expr::Log(a, b)
        | Expr::Root(a, b)
        | Expr::Binom(a, b)
        | Expr::Pm(a, b) => has_decimal(a) || has_decimal(b),
    }
}

fn too_big(r: &BigRational) -> bool {
    r.numer().bits() + r.denom().bits() > MAX_BITS
}

fn checked(r: BigRational) -> Option<BigRational> {
    (!too_big(&r)).then_some(r)
}

fn as_integer(r: &BigRational) -> Option<BigInt> {
    r.is_integer().then(|| r.numer().clone())
}

/// Exact integer `q`-th root of a non-negative integer, if it is a perfect power.
fn int_root(n: &BigInt, q: u32) -> Option<BigInt> {
    if n.is_negative() {
        return None;
    }
    let r = n.nth_root(q);
    (r.pow(q) == *n).then_some(r)
}

fn rat_root(x: &BigRational, q: u32) -> Option<BigRational> {
    Some(BigRational::new(
        int_root(x.numer(), q)?,
        int_root(x.denom(), q)?,
    ))
}

fn rat_pow(base: &BigRational, e: &BigInt) -> Option<BigRational> {
    let n = e.to_i64()?;
    if base.is_zero() {
        return (n > 0)
            .then(BigRational::zero)
            .or_else(|| (n == 0).then(BigRational::one));
    }
    let bits = (base.numer().bits() + base.denom().bits()).max(1);
    if n.unsigned_abs().saturating_mul(bits) > MAX_BITS {
        return None;
    }
    let p = base.pow(n.unsigned_abs() as i32);
    Some(if n < 0 { p.recip() } else { p })
}

/// Exact rational value, or `None` when irrational, variable, complex, undefined or too large.
pub fn exact(e: &Expr, fuel: &Fuel) -> Option<BigRational> {
    if !fuel.tick(1) {
        return None;
    }
    let r = match e {
        Expr::Num(r) | Expr::Dec(r) => r.clone(),
        Expr::Var(_) | Expr::Const(_) | Expr::Opaque(_) | Expr::Pm(..) | Expr::Log(..) => {
            return None
        }
        Expr::Neg(a) => -exact(a, fuel)?,
        Expr::Add(a, b) => exact(a, fuel)? + exact(b, fuel)?,
        Expr::Sub(a, b) => exact(a, fuel)? - exact(b, fuel)?,
        Expr::Mul(a, b) => exact(a, fuel)? * exact(b, fuel)?,
        Expr::Div(a, b) => {
            let d = exact(b, fuel)?;
            if d.is_zero() {
                return None;
            }
            exact(a, fuel)? / d
        }
        Expr::Percent(a) => exact(a, fuel)? / BigRational::from_integer(100.into()),
        Expr::Pow(a, b) => {
            let base = exact(a, fuel)?;
            let ex = exact(b, fuel)?;
            let q = ex.denom().to_u32().filter(|&q| q <= 64)?;
            let root = if q == 1 { base } else { rat_root(&base, q)? };
            rat_pow(&root, ex.numer())?
        }
        Expr::Root(n, x) => {
            let n = as_integer(&exact(n, fuel)?)?
                .to_u32()
                .filter(|&n| (1..=64).contains(&n))?;
            let x = exact(x, fuel)?;
            if x.is_negative() && n % 2 == 1 {
                -rat_root(&-x, n)?
            } else {
                rat_root(&x, n)?
            }
        }
        Expr::Binom(n, k) => {
            let n = as_integer(&exact(n, fuel)?)?.to_i64()?;
            let k = as_integer(&exact(k, fuel)?)?.to_i64()?;
            if !(0..=5000).contains(&n) {
                return None;
            }
            if k < 0 || k > n {
                return Some(BigRational::zero());
            }
            let k = k.min(n - k);
            let mut acc = BigInt::one();
            for i in 0..k {
                acc = acc * BigInt::from(n - i) / BigInt::from(i + 1);
            }
            BigRational::from_integer(acc)
        }
        Expr::Func(f, a) => {
            let x = exact(a, fuel)?;
            match f {
                Fun::Sqrt => rat_root(&x, 2)?,
                Fun::Abs => x.abs(),
                Fun::Floor => x.floor(),
                Fun::Ceil => x.ceil(),
                Fun::Fact => {
                    let n = as_integer(&x)?.to_u32().filter(|&n| n <= 1000)?;
                    let mut acc = BigInt::one();
                    for i in 2..=n {
                        acc *= i;
                    }
                    BigRational::from_integer(acc)
                }
                _ => return None,
            }
        }
    };
    checked(r)
}

/// Lanczos approximation of Γ(x) for real x (factorials of non-integers, e.g. `(d-k)!` at a
/// random point).
fn gamma(x: f64) -> f64 {
    if x < 0.5 {
        return std::f64::consts::PI / ((std::f64::consts::PI * x).sin() * gamma(1.0 - x));
    }
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    (2.0 * std::f64::consts::PI).sqrt() * t.powf(x + 0.5) * (-t).exp() * a
}

fn real_only(z: C64, f: impl Fn(f64) -> f64) -> Option<C64> {
    (z.im.abs() <= 1e-12 * z.re.abs().max(1.0)).then(|| C64::real(f(z.re)))
}

/// Complex value with variables bound from `env` (name, value); `None` when undefined there.
pub fn eval(e: &Expr, env: &[(String, C64)], fuel: &Fuel) -> Option<C64> {
    if !fuel.tick(1) {
        return None;
    }
    let v = match e {
        Expr::Num(r) | Expr::Dec(r) => C64::real(r.to_f64()?),
        Expr::Var(v) => env.iter().find(|(n, _)| n == v)?.1,
        Expr::Const(c) => match c {
            Const::Pi => C64::real(std::f64::consts::PI),
            Const::E => C64::real(std::f64::consts::E),
            Const::I => C64::new(0.0, 1.0),
            Const::Inf => C64::real(f64::INFINITY),
        },
        Expr::Opaque(_) | Expr::Pm(..) => return None,
        Expr::Neg(a) => eval(a, env, fuel)?.neg(),
        Expr::Add(a, b) => eval(a, env, fuel)?.add(eval(b, env, fuel)?),
        Expr::Sub(a, b) => eval(a, env, fuel)?.sub(eval(b, env, fuel)?),
        Expr::Mul(a, b) => eval(a, env, fuel)?.mul(eval(b, env, fuel)?),
        Expr::Div(a, b) => {
            let d = eval(b, env, fuel)?;
            if d.abs() == 0.0 {
                return None;
            }
            eval(a, env, fuel)?.div(d)
        }
        Expr::Percent(a) => eval(a, env, fuel)?.div(C64::real(100.0)),
        Expr::Pow(a, b) => {
            let base = eval(a, env, fuel)?;
            let r = base.pow(eval(b, env, fuel)?);
            // Overflow and underflow are no values: `2^{-100000}` is not 0.
            if !r.is_finite() || (r.abs() == 0.0 && base.abs() != 0.0) {
                return None;
            }
            r
        }
        Expr::Root(n, x) => {
            let n = eval(n, env, fuel)?;
            let x = eval(x, env, fuel)?;
            // Odd real roots of negative reals are real (`\sqrt[3]{-8} = -2`).
            if n.im == 0.0
                && x.im == 0.0
                && x.re < 0.0
                && n.re.fract() == 0.0
                && n.re as i64 % 2 != 0
            {
                C64::real(-(-x.re).powf(1.0 / n.re))
            } else {
                x.pow(C64::real(1.0).div(n))
            }
        }
        Expr::Log(base, x) => {
            let b = eval(base, env, fuel)?.ln();
            if b.abs() == 0.0 {
                return None;
            }
            eval(x, env, fuel)?.ln().div(b)
        }
        Expr::Binom(n, k) => {
            let n = eval(n, env, fuel)?;
            let k = eval(k, env, fuel)?;
            let n = real_only(n, |x| x)?.re;
            let k = real_only(k, |x| x)?.re;
            C64::real(gamma(n + 1.0) / (gamma(k + 1.0) * gamma(n - k + 1.0)))
        }
        Expr::Func(f, a) => {
            let z = eval(a, env, fuel)?;
            match f {
                Fun::Sqrt => z.sqrt(),
                Fun::Sin => z.sin(),
                Fun::Cos => z.cos(),
                Fun::Tan => z.sin().div(z.cos()),
                Fun::Cot => z.cos().div(z.sin()),
                Fun::Sec => C64::real(1.0).div(z.cos()),
                Fun::Csc => C64::real(1.0).div(z.sin()),
                Fun::Asin => real_only(z, f64::asin)?,
                Fun::Acos => real_only(z, f64::acos)?,
                Fun::Atan => real_only(z, f64::atan)?,
                Fun::Sinh => real_only(z, f64::sinh)?,
                Fun::Cosh => real_only(z, f64::cosh)?,
                Fun::Tanh => real_only(z, f64::tanh)?,
                Fun::Ln => {
                    if z.abs() == 0.0 {
                        return None;
                    }
                    z.ln()
                }
                Fun::Exp => {
                    let r = z.exp();
                    if !r.is_finite() || r.abs() == 0.0 {
                        return None;
                    }
                    r
                }
                Fun::Abs => C64::real(z.abs()),
                Fun::Floor => real_only(z, f64::floor)?,
                Fun::Ceil => real_only(z, f64::ceil)?,
                Fun::Fact => real_only(z, |x| {
                    if x >= 0.0 && x.fract() == 0.0 && x <= 170.0 {
                        (2..=x as u32).map(f64::from).product()
                    } else {
                        gamma(x + 1.0)
                    }
                })?,
            }
        }
    };
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_matches_factorial() {
        assert!((gamma(5.0) - 24.0).abs() < 1e-9);
        assert!((gamma(0.5) - std::f64::consts::PI.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn complex_ops() {
        let z = C64::real(-4.0).sqrt();
        assert_eq!(z, C64::new(0.0, 2.0));
        let w = C64::new(0.0, 1.0).powi(2);
        assert!((w.re + 1.0).abs() < 1e-15 && w.im.abs() < 1e-15);
    }
}
