//! `train.gradient_accumulation_steps`: a number of micro-batches per optimizer step, or
//! `"auto"` (the default): the fewest micro-batches whose activations fit the memory left
//! after the weights, gradients and optimizer state, chosen when a run starts (and again when
//! it resumes) by the estimate of the memory pre-check (`trainer::memory`).
//!
//! `auto` is the default because it is 1 whenever 1 fits, the old default, and only differs
//! where 1 would have been refused; for every loss except `bnpo` the loss and gradient do not
//! depend on the number (each micro-batch's term is normalised by whole-step counts).

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Micro-batches per optimizer step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Accumulation {
    /// Sized from the memory available when the run starts.
    #[default]
    Auto,
    /// Exactly this many (at least 1; divides batch_size × num_generations).
    Steps(usize),
}

impl Accumulation {
    /// The fixed number, or None for `auto`.
    pub fn fixed(self) -> Option<usize> {
        match self {
            Accumulation::Auto => None,
            Accumulation::Steps(n) => Some(n),
        }
    }
}

impl fmt::Display for Accumulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Accumulation::Auto => f.write_str("\"auto\""),
            Accumulation::Steps(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Accumulation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Accumulation::Auto => s.serialize_str("auto"),
            Accumulation::Steps(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Accumulation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Accumulation;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a positive integer or \"auto\"")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Accumulation, E> {
                usize::try_from(v)
                    .map(Accumulation::Steps)
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Accumulation, E> {
                u64::try_from(v)
                    .map_err(|_| {
                        E::custom(format!("expected a positive integer or \"auto\", got {v}"))
                    })
                    .and_then(|v| self.visit_u64(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Accumulation, E> {
                if v == "auto" {
                    return Ok(Accumulation::Auto);
                }
                match v.parse::<u64>() {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "expected a positive integer or \"auto\", got \"{v}\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct T {
        a: Accumulation,
    }

    #[test]
    fn integers_and_auto_round_trip_and_others_are_refused() {
        for (text, want) in [
            ("a = 4", Accumulation::Steps(4)),
            ("a = \"auto\"", Accumulation::Auto),
            ("a = \"8\"", Accumulation::Steps(8)),
        ] {
            let t: T = toml::from_str(text).unwrap();
            assert_eq!(t.a, want, "{text}");
            let back: T = toml::from_str(&toml::to_string(&t).unwrap()).unwrap();
            assert_eq!(back, t);
        }
        assert_eq!(
            toml::to_string(&T {
                a: Accumulation::Auto
            })
            .unwrap()
            .trim(),
            "a = \"auto\""
        );
        for bad in ["a = -1", "a = \"sometimes\"", "a = 1.5", "a = true"] {
            let err = toml::from_str::<T>(bad).unwrap_err().to_string();
            assert!(err.contains("auto"), "{bad}: {err}");
        }
        assert_eq!(Accumulation::Auto.fixed(), None);
        assert_eq!(Accumulation::Steps(3).fixed(), Some(3));
        assert_eq!(Accumulation::Steps(3).to_string(), "3");
    }
}
