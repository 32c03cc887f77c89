//! The bundled font: plotters' `ab_glyph` text backend has no system-font lookup, so every
//! family the drawing code (and plotters' own defaults) names is mapped to one embedded face.

use std::sync::OnceLock;

use anyhow::{anyhow, Result};
use plotters::style::{register_font, FontStyle};

/// DejaVu Sans (Bitstream Vera licence, see `assets/README.md`).
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Registers the bundled font under the generic families; idempotent and cheap after the first call.
pub fn ensure_fonts() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        for family in ["sans-serif", "serif", "monospace"] {
            for style in [FontStyle::Normal, FontStyle::Bold] {
                register_font(family, style, DEJAVU_SANS)
                    .map_err(|_| format!("the bundled font could not be parsed ({family})"))?;
            }
        }
        Ok(())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}
