//! A small recursive-descent parser for math expressions.
//!
//! [`parse_expr`] turns one normalised expression into an [`Expr`]: numbers (integers,
//! decimals, scientific notation), `\frac`/`\sqrt`/`\binom`, `^`, implicit multiplication
//! (`2x`, `3\sqrt2`, `2\pi`), mixed numbers (`1\frac{4}{5}` = 9/5), `\cdot`/`\times`/`\div`,
//! `!`, `%`, `|x|`, floor/ceil, functions (`\sin`, `\log_{b}`, `\ln`, ...), Greek letters and
//! subscripted variables. Recursion is capped at [`MAX_DEPTH`] and every step spends [`Fuel`].

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Zero};

use super::Fuel;

/// Deepest nesting the parser accepts before giving up (the answer then compares as text).
pub const MAX_DEPTH: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Const {
    Pi,
    E,
    I,
    Inf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fun {
    Sqrt,
    Sin,
    Cos,
    Tan,
    Cot,
    Sec,
    Csc,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Ln,
    Exp,
    Abs,
    Floor,
    Ceil,
    Fact,
}

/// A parsed math expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// An exact literal (integer; fractions are `Div`).
    Num(BigRational),
    /// A decimal or scientific literal: equal to its value, but marks the answer as approximate.
    Dec(BigRational),
    Var(String),
    Const(Const),
    Neg(Box<Expr>),
    Add(Box<Expr>, Box<Expr>),
    Sub(Box<Expr>, Box<Expr>),
    Mul(Box<Expr>, Box<Expr>),
    Div(Box<Expr>, Box<Expr>),
    Pow(Box<Expr>, Box<Expr>),
    /// `a \pm b`: expanded into two answers by the comparer.
    Pm(Box<Expr>, Box<Expr>),
    Func(Fun, Box<Expr>),
    /// `\log_{base} x`.
    Log(Box<Expr>, Box<Expr>),
    /// `\sqrt[n]{x}`.
    Root(Box<Expr>, Box<Expr>),
    Binom(Box<Expr>, Box<Expr>),
    Percent(Box<Expr>),
    /// Something that only compares as text, such as a number in another base (`204_5`).
    Opaque(String),
}

fn b(e: Expr) -> Box<Expr> {
    Box::new(e)
}

/// Parse a whole string as one expression; `None` if anything is left over or malformed.
pub fn parse_expr(s: &str, fuel: &Fuel) -> Option<Expr> {
    let mut p = Parser {
        s: s.as_bytes(),
        src: s,
        pos: 0,
        depth: 0,
        fuel,
        imaginary: fuel.imaginary.get().unwrap_or_else(|| standalone_i(s)),
    };
    let e = p.expr().ok()?;
    p.ws();
    (p.pos == p.s.len()).then_some(e)
}

type PResult = Result<Expr, ()>;

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    pos: usize,
    depth: usize,
    fuel: &'a Fuel,
    /// Whether `i` is the imaginary unit: as in math-verify (`should_treat_as_complex`), only
    /// when some `i` stands alone (`i^2`, `3 + 2 i`); in `3i` or `2+3i` it is a variable.
    imaginary: bool,
}

/// An `i` with no letter, digit or `_` on either side.
pub fn standalone_i(s: &str) -> bool {
    let b = s.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    b.iter().enumerate().any(|(k, &c)| {
        c == b'i'
            && (k == 0 || !word(b[k - 1]) && b[k - 1] != b'\\')
            && b.get(k + 1).is_none_or(|&n| !word(n))
    })
}

const FUNCS: &[(&str, Fun)] = &[
    ("sin", Fun::Sin),
    ("cos", Fun::Cos),
    ("tan", Fun::Tan),
    ("cot", Fun::Cot),
    ("sec", Fun::Sec),
    ("csc", Fun::Csc),
    ("arcsin", Fun::Asin),
    ("arccos", Fun::Acos),
    ("arctan", Fun::Atan),
    ("sinh", Fun::Sinh),
    ("cosh", Fun::Cosh),
    ("tanh", Fun::Tanh),
    ("ln", Fun::Ln),
    ("exp", Fun::Exp),
];

/// Greek letters and other symbols that act as variables.
const SYMBOL_VARS: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Xi",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
    "hbar",
    "ell",
    "odot",
    "emptyset",
    "varnothing",
];

/// Commands that end an expression (the caller decides what they mean).
fn is_stop_cmd(name: &str) -> bool {
    matches!(
        name,
        "cdot"
            | "times"
            | "div"
            | "ast"
            | "pm"
            | "mp"
            | "cup"
            | "cap"
            | "le"
            | "ge"
            | "ne"
            | "in"
            | "rfloor"
            | "rceil"
            | "end"
            | "rightarrow"
            | "Rightarrow"
            | "implies"
            | "approx"
            | "}"
            | "{"
            | "\\"
            | "setminus"
            | "and"
            | "or"
            | "quad"
            | "mid"
    )
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.pos).copied()
    }
    fn tick(&self) -> Result<(), ()> {
        if self.fuel.tick(1) {
            Ok(())
        } else {
            Err(())
        }
    }
    /// The command name at the cursor (`\frac` → `frac`), without consuming it.
    fn peek_cmd(&mut self) -> Option<&'a str> {
        if self.peek()? != b'\\' {
            return None;
        }
        let start = self.pos + 1;
        let mut end = start;
        while end < self.s.len() && self.s[end].is_ascii_alphabetic() {
            end += 1;
        }
        if end == start {
            // A one-symbol command such as `\{` (the symbol may be multi-byte).
            end = start + self.src[start..].chars().next().map_or(0, char::len_utf8);
        }
        Some(&self.src[start..end])
    }
    fn eat_cmd(&mut self, name: &str) -> bool {
        if self.peek_cmd() == Some(name) {
            self.pos += 1 + name.len();
            true
        } else {
            false
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn enter(&mut self) -> Result<(), ()> {
        self.tick()?;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(())
        } else {
            Ok(())
        }
    }

    fn expr(&mut self) -> PResult {
        self.enter()?;
        let r = self.additive();
        self.depth -= 1;
        r
    }

    fn additive(&mut self) -> PResult {
        let mut acc = self.term()?;
        loop {
            self.tick()?;
            if self.eat(b'+') {
                acc = Expr::Add(b(acc), b(self.term()?));
            } else if self.eat(b'-') {
                acc = Expr::Sub(b(acc), b(self.term()?));
            } else if self.eat_cmd("pm") {
                acc = Expr::Pm(b(acc), b(self.term()?));
            } else if self.eat_cmd("mp") {
                acc = Expr::Pm(b(acc), b(Expr::Neg(b(self.term()?))));
            } else {
                return Ok(acc);
            }
        }
    }

    /// Whether the next token can start an implicitly multiplied factor.
    fn starts_factor(&mut self) -> bool {
        match self.peek() {
            Some(c) if c.is_ascii_alphanumeric() || c == b'(' || c == b'{' || c == b'.' => true,
            Some(b'\\') => self
                .peek_cmd()
                .is_some_and(|n| !is_stop_cmd(n) && n != "right"),
            _ => false,
        }
    }

    fn term(&mut self) -> PResult {
        // A leading sign binds to the whole product: `-2x` = -(2x).
        if self.peek() == Some(b'-') || self.peek() == Some(b'+') {
            let neg = self.s[self.pos] == b'-';
            self.pos += 1;
            self.enter()?;
            let r = self.term();
            self.depth -= 1;
            return if neg { r.map(|e| Expr::Neg(b(e))) } else { r };
        }
        let mut acc = self.unary()?;
        loop {
            self.tick()?;
            if self.eat(b'*')
                || self.eat_cmd("cdot")
                || self.eat_cmd("times")
                || self.eat_cmd("ast")
            {
                acc = Expr::Mul(b(acc), b(self.unary()?));
            } else if self.eat(b'/') || self.eat(b':') || self.eat_cmd("div") {
                acc = Expr::Div(b(acc), b(self.unary()?));
            } else if self.starts_factor() {
                let is_frac = self.peek_cmd() == Some("frac");
                let rhs = self.unary()?;
                acc = match (&acc, &rhs, is_frac) {
                    // Mixed number: `1\frac{4}{5}` = 1 + 4/5.
                    (Expr::Num(n), Expr::Div(p, q), true)
                        if n.is_integer()
                            && matches!(**p, Expr::Num(_))
                            && matches!(**q, Expr::Num(_)) =>
                    {
                        Expr::Add(b(acc), b(rhs))
                    }
                    _ => Expr::Mul(b(acc), b(rhs)),
                };
            } else {
                return Ok(acc);
            }
        }
    }

    fn unary(&mut self) -> PResult {
        self.enter()?;
        let r = if self.eat(b'-') {
            self.unary().map(|e| Expr::Neg(b(e)))
        } else if self.eat(b'+') {
            self.unary()
        } else if self.eat_cmd("pm") {
            // `\pm 2021` is the pair {2021, -2021}.
            self.unary().map(|e| Expr::Pm(b(zero()), b(e)))
        } else {
            self.power()
        };
        self.depth -= 1;
        r
    }

    fn power(&mut self) -> PResult {
        let base = self.postfix()?;
        if self.eat(b'^') {
            let ex = self.script_arg()?;
            let e = Expr::Pow(b(base), b(ex));
            return self.postfix_ops(e);
        }
        Ok(base)
    }

    /// The argument of `^` / `_`, `\frac`, `\sqrt`: a `{group}`, a command, or one character.
    fn script_arg(&mut self) -> PResult {
        self.enter()?;
        let r = self.script_arg_inner();
        self.depth -= 1;
        r
    }

    fn script_arg_inner(&mut self) -> PResult {
        match self.peek().ok_or(())? {
            b'{' => {
                self.pos += 1;
                let e = self.expr()?;
                if !self.eat(b'}') {
                    return Err(());
                }
                Ok(e)
            }
            b'-' => {
                self.pos += 1;
                Ok(Expr::Neg(b(self.script_arg()?)))
            }
            b'\\' => self.primary(),
            c if c.is_ascii_digit() => {
                self.pos += 1;
                Ok(Expr::Num(BigRational::from_integer(BigInt::from(c - b'0'))))
            }
            c if c.is_ascii_alphabetic() => {
                self.pos += 1;
                Ok(letter(c, self.imaginary))
            }
            _ => Err(()),
        }
    }

    fn postfix(&mut self) -> PResult {
        let p = self.primary()?;
        self.postfix_ops(p)
    }

    fn postfix_ops(&mut self, mut e: Expr) -> PResult {
        loop {
            self.tick()?;
            if self.peek() == Some(b'!') && self.s.get(self.pos + 1) != Some(&b'=') {
                self.pos += 1;
                e = Expr::Func(Fun::Fact, b(e));
            } else if self.eat(b'%') {
                e = Expr::Percent(b(e));
            } else if self.peek() == Some(b'\'') {
                return Err(());
            } else if self.peek() == Some(b'_') {
                self.pos += 1;
                let start = self.pos;
                let sub = self.script_arg()?;
                let sub_txt: String = self.src[start..self.pos]
                    .chars()
                    .filter(|c| !"{} ".contains(*c))
                    .collect();
                e = match (e, sub) {
                    // `204_5`: a numeral in another base only equals the same text.
                    (Expr::Num(n), _) => Expr::Opaque(format!("{n}_{sub_txt}")),
                    (Expr::Var(v), _) => Expr::Var(format!("{v}_{sub_txt}")),
                    _ => return Err(()),
                };
            } else {
                return Ok(e);
            }
        }
    }

    fn number(&mut self) -> PResult {
        let start = self.pos;
        let s = self.s;
        let mut i = self.pos;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
        let int_part = &self.src[start..i];
        let mut frac_part = "";
        let mut decimal = false;
        if i < s.len() && s[i] == b'.' && s.get(i + 1).is_some_and(u8::is_ascii_digit) {
            let fs = i + 1;
            i += 1;
            while i < s.len() && s[i].is_ascii_digit() {
                i += 1;
            }
            frac_part = &self.src[fs..i];
            decimal = true;
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(());
        }
        // Scientific notation `3.3e12`, `1e-8` (digits must follow the `e`).
        let mut exp10: i64 = 0;
        if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
            let mut j = i + 1;
            let neg = j < s.len() && s[j] == b'-';
            if j < s.len() && (s[j] == b'-' || s[j] == b'+') {
                j += 1;
            }
            let ds = j;
            while j < s.len() && s[j].is_ascii_digit() {
                j += 1;
            }
            if j > ds && j - ds <= 4 {
                let v: i64 = self.src[ds..j].parse().map_err(|_| ())?;
                if v > 400 {
                    return Err(());
                }
                exp10 = if neg { -v } else { v };
                decimal = true;
                i = j;
            }
        }
        self.fuel.tick((i - start) as u64).then_some(()).ok_or(())?;
        self.pos = i;
        let digits = format!("{int_part}{frac_part}");
        let mant: BigInt = digits.parse().map_err(|_| ())?;
        let scale = exp10 - frac_part.len() as i64;
        let ten = BigInt::from(10);
        let val = if scale >= 0 {
            BigRational::from_integer(mant * num_traits::pow(ten, scale as usize))
        } else {
            BigRational::new(mant, num_traits::pow(ten, (-scale) as usize))
        };
        Ok(if decimal {
            Expr::Dec(val)
        } else {
            Expr::Num(val)
        })
    }

    fn group(&mut self, close: u8) -> PResult {
        let e = self.expr()?;
        if !self.eat(close) {
            return Err(());
        }
        Ok(e)
    }

    fn primary(&mut self) -> PResult {
        self.enter()?;
        let r = self.primary_inner();
        self.depth -= 1;
        r
    }

    fn primary_inner(&mut self) -> PResult {
        let c = self.peek().ok_or(())?;
        match c {
            b'0'..=b'9' | b'.' => self.number(),
            b'(' => {
                self.pos += 1;
                self.group(b')')
            }
            b'[' => {
                self.pos += 1;
                self.group(b']')
            }
            b'{' => {
                self.pos += 1;
                self.group(b'}')
            }
            b'|' => {
                self.pos += 1;
                let e = self.expr()?;
                if !self.eat(b'|') {
                    return Err(());
                }
                Ok(Expr::Func(Fun::Abs, b(e)))
            }
            b'\\' => self.command(),
            c if c.is_ascii_alphabetic() => {
                // Function names written without a backslash (`sqrt(2)`, `sin x`).
                let rest = &self.src[self.pos..];
                for name in [
                    "sqrt", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "sin", "cos",
                    "tan", "cot", "sec", "csc", "log", "ln", "exp", "pi",
                ] {
                    if rest.starts_with(name)
                        && !rest[name.len()..].starts_with(|c: char| c.is_ascii_alphabetic())
                    {
                        self.pos += name.len();
                        return self.named(name);
                    }
                }
                self.pos += 1;
                Ok(letter(c, self.imaginary))
            }
            _ => Err(()),
        }
    }

    fn command(&mut self) -> PResult {
        let name = self.peek_cmd().ok_or(())?;
        if is_stop_cmd(name) || name == "right" {
            return Err(());
        }
        self.pos += 1 + name.len();
        self.named(name)
    }

    /// A command or bare function word whose name has been consumed.
    fn named(&mut self, name: &str) -> PResult {
        match name {
            "frac" | "over" => {
                let n = self.script_arg()?;
                let d = self.script_arg()?;
                Ok(Expr::Div(b(n), b(d)))
            }
            "binom" | "choose" => {
                let n = self.script_arg()?;
                let k = self.script_arg()?;
                Ok(Expr::Binom(b(n), b(k)))
            }
            "sqrt" => {
                if self.eat(b'[') {
                    let n = self.group(b']')?;
                    let x = self.script_arg()?;
                    return Ok(Expr::Root(b(n), b(x)));
                }
                if self.peek() == Some(b'(') {
                    self.pos += 1;
                    let x = self.group(b')')?;
                    return Ok(Expr::Func(Fun::Sqrt, b(x)));
                }
                Ok(Expr::Func(Fun::Sqrt, b(self.script_arg()?)))
            }
            "pi" => Ok(Expr::Const(Const::Pi)),
            "infty" | "infin" => Ok(Expr::Const(Const::Inf)),
            "lfloor" | "lceil" => {
                let e = self.expr()?;
                let close = if name == "lfloor" { "rfloor" } else { "rceil" };
                if !self.eat_cmd(close) {
                    return Err(());
                }
                Ok(Expr::Func(
                    if name == "lfloor" {
                        Fun::Floor
                    } else {
                        Fun::Ceil
                    },
                    b(e),
                ))
            }
            "log" | "lg" => {
                let base = if self.eat(b'_') {
                    self.script_arg()?
                } else if name == "lg" {
                    Expr::Num(BigRational::from_integer(10.into()))
                } else {
                    Expr::Const(Const::E)
                };
                let pow = self.func_power()?;
                let arg = self.func_arg()?;
                Ok(apply_pow(Expr::Log(b(base), b(arg)), pow))
            }
            "{" | "}" => Err(()),
            _ => {
                if let Some(&(_, f)) = FUNCS.iter().find(|(n, _)| *n == name) {
                    let pow = self.func_power()?;
                    let arg = self.func_arg()?;
                    // `\sin^{-1} x` is the inverse function.
                    if let Some(Expr::Neg(one)) = &pow {
                        if **one == Expr::Num(BigRational::one()) {
                            let inv = match f {
                                Fun::Sin => Some(Fun::Asin),
                                Fun::Cos => Some(Fun::Acos),
                                Fun::Tan => Some(Fun::Atan),
                                _ => None,
                            };
                            if let Some(inv) = inv {
                                return Ok(Expr::Func(inv, b(arg)));
                            }
                        }
                    }
                    return Ok(apply_pow(Expr::Func(f, b(arg)), pow));
                }
                if SYMBOL_VARS.contains(&name) {
                    return Ok(Expr::Var(format!("\\{name}")));
                }
                if name.chars().all(|c| c.is_ascii_alphabetic()) && !name.is_empty() {
                    // Unknown decorations (`\dot`, `\hat`, `\vec`, `\overline`) and symbols:
                    // an opaque variable named after the command.
                    return Ok(Expr::Var(format!("\\{name}")));
                }
                Err(())
            }
        }
    }

    fn func_power(&mut self) -> Result<Option<Expr>, ()> {
        if self.eat(b'^') {
            Ok(Some(self.script_arg()?))
        } else {
            Ok(None)
        }
    }

    /// `\sin(x)`, `\sin{x}`, or `\sin 2x` (an implicit product of plain factors).
    fn func_arg(&mut self) -> PResult {
        self.enter()?;
        let r = self.func_arg_inner();
        self.depth -= 1;
        r
    }

    fn func_arg_inner(&mut self) -> PResult {
        match self.peek().ok_or(())? {
            b'(' => {
                self.pos += 1;
                let e = self.group(b')')?;
                self.postfix_ops(e)
            }
            b'{' => {
                self.pos += 1;
                self.group(b'}')
            }
            _ => {
                let mut acc = self.power()?;
                loop {
                    self.tick()?;
                    let next_is_func = self
                        .peek_cmd()
                        .is_some_and(|n| FUNCS.iter().any(|(f, _)| *f == n) || n == "log");
                    if next_is_func || !self.starts_factor() || self.peek() == Some(b'(') {
                        return Ok(acc);
                    }
                    acc = Expr::Mul(b(acc), b(self.power()?));
                }
            }
        }
    }
}

fn apply_pow(e: Expr, pow: Option<Expr>) -> Expr {
    match pow {
        Some(p) => Expr::Pow(b(e), b(p)),
        None => e,
    }
}

/// A single letter: `e` is Euler's number and `i` the imaginary unit (when `imaginary`);
/// others are variables.
fn letter(c: u8, imaginary: bool) -> Expr {
    match c {
        b'e' => Expr::Const(Const::E),
        b'i' if imaginary => Expr::Const(Const::I),
        _ => Expr::Var((c as char).to_string()),
    }
}

/// `1`, used by callers that build expressions.
pub fn one() -> Expr {
    Expr::Num(BigRational::one())
}

/// `0`, used by callers that build expressions.
pub fn zero() -> Expr {
    Expr::Num(BigRational::zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verifier::normalize::normalize;

    fn p(s: &str) -> Option<Expr> {
        parse_expr(&normalize(s), &Fuel::new(1_000_000))
    }

    #[test]
    fn parse_shapes() {
        let half = Expr::Div(b(one()), b(Expr::Num(BigRational::from_integer(2.into()))));
        assert_eq!(p(r"\frac12"), Some(half.clone()));
        assert_eq!(p(r"\dfrac{1}{2}"), Some(half));
        assert!(matches!(p(r"1\frac{4}{5}"), Some(Expr::Add(..))));
        assert!(matches!(p(r"2\sqrt{2}"), Some(Expr::Mul(..))));
        assert!(matches!(p(r"204_5"), Some(Expr::Opaque(_))));
        assert!(p(r"(1,2)").is_none());
        assert!(p(r"\sin^2 x + \cos^2 x").is_some());
        assert!(p(r"\log_{10} 2").is_some());
        assert!(p(r"3.3e12").is_some());
    }
}
