//! Comparison of two parsed answers, gold first: math-verify's rules (`sympy_expr_eq`) on
//! grpo's own answer structures, with every step spending [`Fuel`].

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{FromPrimitive, Zero};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::options::{EquivOptions, PercentPolicy, MAX_ITEMS, MAX_VARS};
use super::parse::{Const, Expr};
use super::structure::{is_name, Answer, RelOp};
use super::value::{eval, exact, free_vars, has_decimal, has_piecewise, C64};
use super::Fuel;

/// Magnitude beyond which a value known only as a float is not compared: it could differ from
/// another in digits a float does not hold (`10^{10^{10}}` vs `10^{10^{10}} + 1`).
const MAX_FLOAT_MAGNITUDE: f64 = 1e15;

pub(super) struct Cmp<'a> {
    pub opts: &'a EquivOptions,
    pub fuel: &'a Fuel,
}

/// Operands and operators of a relation chain (`a = b = c`, `a < x < b`).
fn chain(a: &Answer) -> Option<(Vec<&Answer>, Vec<RelOp>)> {
    let mut operands = Vec::new();
    let mut ops = Vec::new();
    fn walk<'a>(a: &'a Answer, operands: &mut Vec<&'a Answer>, ops: &mut Vec<RelOp>) {
        match a {
            Answer::Rel { lhs, op, rhs } => {
                walk(lhs, operands, ops);
                ops.push(*op);
                walk(rhs, operands, ops);
            }
            other => operands.push(other),
        }
    }
    if !matches!(a, Answer::Rel { .. }) {
        return None;
    }
    walk(a, &mut operands, &mut ops);
    Some((operands, ops))
}

/// `(first lhs, last rhs)` of an equation or a chain of equations.
fn eq_chain(a: &Answer) -> Option<(&Answer, &Answer)> {
    let (operands, ops) = chain(a)?;
    (ops.iter().all(|&o| o == RelOp::Eq)).then(|| (operands[0], operands[operands.len() - 1]))
}

fn rel(lhs: &Answer, op: RelOp, rhs: &Answer) -> Answer {
    Answer::Rel {
        lhs: Box::new(lhs.clone()),
        op,
        rhs: Box::new(rhs.clone()),
    }
}

/// The interval an inequality in one variable describes, if it is one.
pub(super) fn as_interval(a: &Answer) -> Option<Answer> {
    let (operands, ops) = chain(a)?;
    let inf = || Answer::Expr(Expr::Const(Const::Inf));
    let neg_inf = || Answer::Expr(Expr::Neg(Box::new(Expr::Const(Const::Inf))));
    let bracket = |op: RelOp, open: bool| match (op, open) {
        (RelOp::Lt, true) => Some(b'('),
        (RelOp::Le, true) => Some(b'['),
        (RelOp::Lt, false) => Some(b')'),
        (RelOp::Le, false) => Some(b']'),
        _ => None,
    };
    let value = |x: &Answer| matches!(x, Answer::Expr(_)) && !is_name(x);
    let seq = |open, close, lo: Answer, hi: Answer| Answer::Seq {
        open,
        close,
        items: vec![lo, hi],
    };
    match (operands.as_slice(), ops.as_slice()) {
        ([lo, x, hi], [o1, o2]) if is_name(x) && value(lo) && value(hi) => Some(seq(
            bracket(*o1, true)?,
            bracket(*o2, false)?,
            (*lo).clone(),
            (*hi).clone(),
        )),
        ([x, hi], [o]) if is_name(x) && value(hi) => {
            Some(seq(b'(', bracket(*o, false)?, neg_inf(), (*hi).clone()))
        }
        ([lo, x], [o]) if is_name(x) && value(lo) => {
            Some(seq(bracket(*o, true)?, b')', (*lo).clone(), inf()))
        }
        _ => None,
    }
}

fn is_setlike(a: &Answer) -> bool {
    matches!(
        a,
        Answer::Seq { .. } | Answer::Set(_) | Answer::List(_) | Answer::Union(_)
    )
}

/// The exact value of a number literal (sympy's atomic `Number`): an integer, a decimal
/// (`true`: a float), a fraction of integers, their negation, or a percentage of one.
fn atomic(e: &Expr) -> Option<(BigRational, bool)> {
    match e {
        Expr::Num(r) => Some((r.clone(), false)),
        Expr::Dec(r) => Some((r.clone(), true)),
        Expr::Neg(x) => atomic(x).map(|(r, f)| (-r, f)),
        Expr::Div(a, b) => match (&**a, &**b) {
            (Expr::Num(p), Expr::Num(q)) if p.is_integer() && q.is_integer() && !q.is_zero() => {
                Some((p / q, false))
            }
            _ => None,
        },
        Expr::Percent(x) => {
            atomic(x).map(|(r, f)| (r / BigRational::from_integer(BigInt::from(100)), f))
        }
        _ => None,
    }
}

fn int_literal(e: &Expr) -> Option<BigRational> {
    match atomic(e) {
        Some((r, false)) if r.is_integer() && !matches!(e, Expr::Percent(_) | Expr::Div(..)) => {
            Some(r)
        }
        _ => None,
    }
}

impl Cmp<'_> {
    /// Gold against pred, with math-verify's asymmetric unwrapping: an assignment (`x = 3`,
    /// `x = 1 + 2 = 3`) becomes `lhs = last rhs`; a pred equation against a gold that is no
    /// equation becomes its last right-hand side; a gold assignment against a pred that is no
    /// equation becomes its value; a gold inequality against a pred set becomes an interval.
    pub fn top(&self, gold: &Answer, pred: &Answer) -> bool {
        let (g_eq, p_eq) = (eq_chain(gold), eq_chain(pred));
        let g_assign = g_eq.filter(|(l, _)| is_name(l));
        let p_assign = p_eq.filter(|(l, _)| is_name(l));
        let mut g = match g_assign {
            Some((l, r)) => rel(l, RelOp::Eq, r),
            None => gold.clone(),
        };
        let mut p = match p_assign {
            Some((l, r)) => rel(l, RelOp::Eq, r),
            None => pred.clone(),
        };
        if let (Some((_, r)), None) = (p_eq, g_eq) {
            p = r.clone();
        } else if let (Some((_, r)), None) = (g_assign, p_eq) {
            g = r.clone();
        }
        if matches!(g, Answer::Rel { .. }) && is_setlike(&p) {
            if let Some(i) = as_interval(&g) {
                g = i;
            }
        }
        self.answers(&g, &p)
    }

    /// Structural comparison; `a` is the gold side.
    pub fn answers(&self, a: &Answer, b: &Answer) -> bool {
        if !self.fuel.tick(1) {
            return false;
        }
        use Answer as A;
        // A set holds each value once (`15\frac{39}{40}` and `\frac{639}{40}` are one element).
        if let Some(d) = self.dedup(a) {
            return self.answers(&d, b);
        }
        if let Some(d) = self.dedup(b) {
            return self.answers(a, &d);
        }
        match (a, b) {
            (A::Expr(x), A::Expr(y)) => self.expr_pair(x, y),
            (A::Text(x), A::Text(y)) => x == y,
            (
                A::Seq {
                    open: o1,
                    close: c1,
                    items: i1,
                },
                A::Seq {
                    open: o2,
                    close: c2,
                    items: i2,
                },
            ) => {
                // Intervals must agree in every bracket; tuples keep their order.
                o1 == o2 && c1 == c2 && self.ordered(i1, i2)
            }
            (A::Set(x) | A::List(x), A::Set(y) | A::List(y)) => {
                if matches!((a, b), (A::List(_), A::List(_))) && !self.opts.unordered_lists {
                    self.ordered(x, y)
                } else {
                    self.unordered(x, y)
                }
            }
            (A::Union(x), A::Union(y)) => self.unordered(x, y),
            (A::Matrix(x), A::Matrix(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(r, s)| self.ordered(r, s))
            }
            // A gold tuple (or open interval) against a pred set: in the pred's written order.
            (A::Seq { open, close, items }, A::Set(y) | A::List(y)) if y.len() > 1 => {
                (*open, *close) == (b'(', b')') && self.ordered(items, y)
            }
            // A gold set against a pred tuple: order does not matter.
            (A::Set(x) | A::List(x), A::Seq { open, close, items }) if x.len() > 1 => {
                (*open, *close) == (b'(', b')') && self.unordered(x, items)
            }
            (A::Set(x), other) | (other, A::Set(x)) if x.len() == 1 => self.answers(&x[0], other),
            (A::Rel { .. }, A::Rel { .. }) => self.relations(a, b),
            _ => false,
        }
    }

    /// The set without its repeated numbers, when it has any.
    fn dedup(&self, a: &Answer) -> Option<Answer> {
        let (Answer::Set(v) | Answer::List(v)) = a else {
            return None;
        };
        if v.len() < 2 || v.len() > MAX_ITEMS {
            return None;
        }
        let values: Vec<Option<BigRational>> = v
            .iter()
            .map(|x| match x {
                Answer::Expr(e) => exact(e, self.fuel),
                _ => None,
            })
            .collect();
        let mut keep: Vec<Answer> = Vec::new();
        let mut seen: Vec<&BigRational> = Vec::new();
        for (x, val) in v.iter().zip(&values) {
            match val {
                Some(r) if seen.contains(&r) => continue,
                Some(r) => seen.push(r),
                None if keep.contains(x) => continue,
                None => {}
            }
            keep.push(x.clone());
        }
        if keep.len() == v.len() {
            return None;
        }
        Some(if keep.len() == 1 {
            keep.pop()?
        } else {
            match a {
                Answer::Set(_) => Answer::Set(keep),
                _ => Answer::List(keep),
            }
        })
    }

    fn relations(&self, a: &Answer, b: &Answer) -> bool {
        let (Some((xa, oa)), Some((xb, ob))) = (chain(a), chain(b)) else {
            return false;
        };
        if oa.len() > 1 || ob.len() > 1 {
            // Chains compare link by link, or as the intervals they describe.
            if oa == ob
                && xa.len() == xb.len()
                && (0..oa.len())
                    .all(|i| self.relation((xa[i], oa[i], xa[i + 1]), (xb[i], ob[i], xb[i + 1])))
            {
                return true;
            }
            return match (as_interval(a), as_interval(b)) {
                (Some(x), Some(y)) => self.answers(&x, &y),
                _ => false,
            };
        }
        self.relation((xa[0], oa[0], xa[1]), (xb[0], ob[0], xb[1]))
    }

    fn relation(&self, a: (&Answer, RelOp, &Answer), b: (&Answer, RelOp, &Answer)) -> bool {
        let ((l1, o1, r1), (l2, o2, r2)) = (a, b);
        if o1 != o2 {
            return false;
        }
        if let (Answer::Expr(a1), Answer::Expr(b1), Answer::Expr(a2), Answer::Expr(b2)) =
            (l1, r1, l2, r2)
        {
            let d1 = Expr::Sub(Box::new(a1.clone()), Box::new(b1.clone()));
            let d2 = Expr::Sub(Box::new(a2.clone()), Box::new(b2.clone()));
            if self.values(&d1, &d2) {
                return true;
            }
            if o1 == RelOp::Eq {
                let d2n = Expr::Neg(Box::new(d2.clone()));
                return self.values(&d1, &d2n) || self.proportional(&d1, &d2, false);
            }
            if matches!(o1, RelOp::Lt | RelOp::Le) {
                // Solving both gives the same set when the sides are a positive multiple.
                return self.proportional(&d1, &d2, true);
            }
            return false;
        }
        self.answers(l1, l2) && self.answers(r1, r2)
    }

    fn ordered(&self, x: &[Answer], y: &[Answer]) -> bool {
        x.len() == y.len() && x.len() <= MAX_ITEMS && x.iter().zip(y).all(|(a, b)| self.top(a, b))
    }

    /// A perfect matching under equivalence (Kuhn's augmenting paths), so the result does not
    /// depend on the order of either side.
    fn unordered(&self, x: &[Answer], y: &[Answer]) -> bool {
        let n = x.len();
        if n != y.len() || n > MAX_ITEMS {
            return false;
        }
        let mut memo: Vec<Option<bool>> = vec![None; n * n];
        let mut matched: Vec<Option<usize>> = vec![None; n];
        for i in 0..n {
            let mut seen = vec![false; n];
            if !self.augment(i, x, y, &mut memo, &mut matched, &mut seen) {
                return false;
            }
        }
        true
    }

    fn augment(
        &self,
        i: usize,
        x: &[Answer],
        y: &[Answer],
        memo: &mut [Option<bool>],
        matched: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        let n = y.len();
        for j in 0..n {
            if seen[j] {
                continue;
            }
            let ok = match memo[i * n + j] {
                Some(v) => v,
                None => {
                    let v = self.top(&x[i], &y[j]);
                    memo[i * n + j] = Some(v);
                    v
                }
            };
            if !ok {
                continue;
            }
            seen[j] = true;
            let free = match matched[j] {
                None => true,
                Some(k) => self.augment(k, x, y, memo, matched, seen),
            };
            if free {
                matched[j] = Some(i);
                return true;
            }
        }
        false
    }

    fn expr_pair(&self, a: &Expr, b: &Expr) -> bool {
        match (a, b) {
            (Expr::Percent(x), Expr::Percent(y)) => self.values(x, y),
            (Expr::Percent(x), other) | (other, Expr::Percent(x)) => match self.opts.percent {
                // math-verify: `9\%` equals `9` (both integers) and `0.09`, not `9.0`.
                PercentPolicy::Lenient => match (int_literal(x), int_literal(other)) {
                    (Some(p), Some(q)) => p == q,
                    _ => self.values(&Expr::Percent(x.clone()), other),
                },
                PercentPolicy::AsFraction => self.values(&Expr::Percent(x.clone()), other),
                PercentPolicy::AsNumber => self.values(x, other),
            },
            _ => self.values(a, b),
        }
    }

    /// Numeric equality as math-verify decides it: when one side is a number literal and
    /// either is a decimal, both are rounded to 6 places (`float_rounding`); otherwise values
    /// must be equal (exactly as rationals, else as floats to 1e-12), and expressions with
    /// free variables must agree at sample points.
    pub fn values(&self, a: &Expr, b: &Expr) -> bool {
        if a == b {
            return true;
        }
        let fuel = self.fuel;
        let (aa, ba) = (atomic(a), atomic(b));
        if aa.as_ref().is_some_and(|x| x.1) || ba.as_ref().is_some_and(|x| x.1) {
            // Against an integer (sympy's `Integer.round` is exact) only the same value counts:
            // `12` = `12.0`, but `12` ≠ `12.0000004`, while `\frac{1}{3}` = `0.3333334`.
            let integer = |e: &Expr, atom: &Option<(BigRational, bool)>| {
                !atom.as_ref().is_some_and(|x| x.1)
                    && exact(e, fuel).is_some_and(|r| r.is_integer())
            };
            if integer(a, &aa) || integer(b, &ba) {
                return exact(a, fuel).is_some_and(|x| exact(b, fuel).is_some_and(|y| x == y));
            }
            return match (self.rounded(a, aa), self.rounded(b, ba)) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            };
        }
        let (xa, xb) = (exact(a, fuel), exact(b, fuel));
        if let (Some(x), Some(y)) = (&xa, &xb) {
            // A decimal inside an expression is a binary float to sympy: `7/5.0` is not
            // exactly 7/5, while `1/2.0` is 1/2.
            let binary = |r: &BigRational| {
                let d = r.denom();
                d.bits() > 0 && (d & (d - BigInt::from(1u8))).is_zero()
            };
            return x == y && (!(has_decimal(a) || has_decimal(b)) || binary(x));
        }
        let mut vars = Vec::new();
        free_vars(a, &mut vars);
        free_vars(b, &mut vars);
        vars.sort();
        if vars.is_empty() {
            return match (eval(a, &[], fuel), eval(b, &[], fuel)) {
                (Some(x), Some(y)) => float_equal(x, y),
                _ => false,
            };
        }
        if vars.len() > MAX_VARS {
            return false;
        }
        let mut valid = 0;
        for env in self.points(&vars, true) {
            match (eval(a, &env, fuel), eval(b, &env, fuel)) {
                (Some(x), Some(y)) if x.is_finite() && y.is_finite() => {
                    if !close(x, y, 1e-8, 1e-10) {
                        return false;
                    }
                    valid += 1;
                }
                _ => {}
            }
            if fuel.exhausted() {
                return false;
            }
        }
        valid >= 3.min(self.opts.points)
    }

    /// The value rounded to `float_rounding` decimal places, as an integer count of those units.
    fn rounded(&self, e: &Expr, atom: Option<(BigRational, bool)>) -> Option<BigInt> {
        let places = self.opts.float_rounding.min(30);
        let million = BigRational::from_integer(num_traits::pow(BigInt::from(10), places as usize));
        let r = match atom {
            Some((r, _)) => r,
            None => match exact(e, self.fuel) {
                Some(r) => r,
                None => {
                    let z = eval(e, &[], self.fuel)?;
                    if !z.is_finite()
                        || z.im.abs() > 1e-12 * z.re.abs().max(1.0)
                        || z.re.abs() > MAX_FLOAT_MAGNITUDE
                    {
                        return None;
                    }
                    BigRational::from_f64(z.re)?
                }
            },
        };
        // Half to even: a decimal written with a trailing 5 is, in binary, as often just below
        // the tie as above it.
        let t = r * million;
        let fl = t.floor();
        let half = BigRational::new(BigInt::from(1), BigInt::from(2));
        let d = &t - &fl;
        let up = d > half || d == half && !(fl.to_integer() % BigInt::from(2)).is_zero();
        Some(if up {
            fl.to_integer() + 1
        } else {
            fl.to_integer()
        })
    }

    /// `d1 = c * d2` for one nonzero constant `c` (`positive`: c > 0) at all sample points.
    fn proportional(&self, d1: &Expr, d2: &Expr, positive: bool) -> bool {
        let mut vars = Vec::new();
        free_vars(d1, &mut vars);
        free_vars(d2, &mut vars);
        vars.sort();
        if vars.is_empty() || vars.len() > MAX_VARS {
            return false;
        }
        let mut ratio: Option<C64> = None;
        let mut valid = 0;
        let signed = has_piecewise(d1) || has_piecewise(d2);
        for env in self.points(&vars, signed) {
            let (Some(x), Some(y)) = (eval(d1, &env, self.fuel), eval(d2, &env, self.fuel)) else {
                continue;
            };
            if !x.is_finite() || !y.is_finite() || y.abs() < 1e-9 || x.abs() < 1e-9 {
                continue;
            }
            let r = C64::new(
                (x.re * y.re + x.im * y.im) / (y.abs() * y.abs()),
                (x.im * y.re - x.re * y.im) / (y.abs() * y.abs()),
            );
            if positive && (r.re <= 0.0 || r.im.abs() > 1e-9) {
                return false;
            }
            match ratio {
                None => ratio = Some(r),
                Some(r0) if !close(r0, r, 1e-8, 1e-12) => return false,
                _ => {}
            }
            valid += 1;
        }
        valid >= 3
    }

    /// Deterministic sample points (same for both sides: variables are sorted) with magnitudes
    /// in [0.5, 2.5]; `signed` makes about half of them negative, so that identities true only
    /// for positive values (`\sqrt{x^2}` vs `x`, `\log(xy)` vs `\log x + \log y`) fail as sympy's
    /// `simplify` on real symbols does.
    fn points(&self, vars: &[String], signed: bool) -> Vec<Vec<(String, C64)>> {
        let mut rng = ChaCha8Rng::seed_from_u64(0x6772_706f);
        (0..self.opts.points.max(3))
            .map(|_| {
                vars.iter()
                    .map(|v| {
                        let x: f64 = rng.random_range(0.5..2.5);
                        let neg = signed && rng.random_bool(0.5);
                        (v.clone(), C64::real(if neg { -x } else { x }))
                    })
                    .collect()
            })
            .collect()
    }
}

/// Two constant values known only as floats: equal to about 12 digits, both finite and not
/// huge (beyond [`MAX_FLOAT_MAGNITUDE`] a float cannot tell `N` from `N + 1`).
fn float_equal(x: C64, y: C64) -> bool {
    if !x.is_finite() || !y.is_finite() {
        return false;
    }
    if x.abs().max(y.abs()) > MAX_FLOAT_MAGNITUDE {
        return false;
    }
    close(x, y, 1e-12, 1e-12)
}

fn close(x: C64, y: C64, rel: f64, abs: f64) -> bool {
    if !x.is_finite() || !y.is_finite() {
        return false;
    }
    let d = C64::new(x.re - y.re, x.im - y.im).abs();
    d <= rel * x.abs().max(y.abs()) || d <= abs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_numbers() {
        let n = |i: i64| Expr::Num(BigRational::from_integer(BigInt::from(i)));
        assert!(atomic(&Expr::Div(Box::new(n(4)), Box::new(n(9)))).is_some());
        assert!(atomic(&Expr::Add(Box::new(n(4)), Box::new(n(9)))).is_none());
        assert_eq!(
            int_literal(&Expr::Neg(Box::new(n(3)))),
            Some(-BigRational::from(BigInt::from(3)))
        );
    }
}
