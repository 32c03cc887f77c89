//! The tunables of [`super::is_equiv`] and the size caps every comparison stage shares; kept
//! below `equiv`, `compare` and `structure` so that each can read them without importing the
//! others.

/// How `50\%` relates to an answer written without a percent sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PercentPolicy {
    /// `50\%` equals both `50` and `0.5` (the gold's `%` is often dropped or applied).
    #[default]
    Lenient,
    /// `50\%` equals `0.5` only.
    AsFraction,
    /// `50\%` equals `50` only (the sign is decoration).
    AsNumber,
}

/// Tunables of [`is_equiv`]. The defaults match MATH-style grading.
#[derive(Debug, Clone, PartialEq)]
pub struct EquivOptions {
    /// Decimal places both sides are rounded to when one is a number literal and either is a
    /// decimal (math-verify's `float_rounding`: `0.444444` = `\frac{4}{9}`, `0.44444` is not).
    pub float_rounding: u32,
    pub percent: PercentPolicy,
    /// Whether a bare comma list `1, 2` is a set (order-free). Tuples `(1, 2)` are always
    /// ordered; `\{1, 2\}` is always a set.
    pub unordered_lists: bool,
    /// Answers longer than this (bytes, after trimming) only match by exact string equality.
    pub max_len: usize,
    /// Work budget per pair (parser steps + evaluation nodes + comparisons); when it runs out
    /// the pair is judged not equivalent.
    pub fuel: u64,
    /// Random points per free-variable identity test (at least 3 must be defined).
    pub points: usize,
}

impl Default for EquivOptions {
    fn default() -> Self {
        Self {
            float_rounding: 6,
            percent: PercentPolicy::Lenient,
            unordered_lists: true,
            max_len: 1000,
            fuel: DEFAULT_FUEL,
            points: 6,
        }
    }
}

/// Default work budget per pair; see the module docs for what a unit is.
pub const DEFAULT_FUEL: u64 = 400_000;
/// Largest list / set / matrix (elements) compared structurally.
pub const MAX_ITEMS: usize = 64;
/// Largest number of free variables in an identity test.
pub const MAX_VARS: usize = 8;
