//! The font of `report.png`'s title, axes and legend: DejaVu Sans, embedded in the
//! binary (`cli/assets/fonts`, Bitstream Vera license), so the plot has its text on
//! a machine with no system fonts.

use plotters::style::FontStyle;
use std::sync::OnceLock;

/// The family name the plot asks for.
pub const FAMILY: &str = "sans-serif";

/// DejaVu Sans, the complete TTF file.
pub static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Registers the embedded font with plotters' `ab_glyph` backend as [`FAMILY`] (once
/// per process). False only if the embedded bytes are not a font plotters can read.
pub fn register() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plotters::style::{FontDesc, IntoFont};

    #[test]
    fn the_embedded_font_registers_and_measures_text() {
        assert!(register(), "the embedded font does not load");
        assert!(register(), "a second registration is a no-op");
        let font: FontDesc = (FAMILY, 20).into_font();
        let (w, h) = font.box_size("epoch").expect("the registered font lays out text");
        assert!(w > 20 && h > 5, "text box {w}x{h} is too small for 'epoch' at 20 px");
    }

    /// Pixels that are not white in an RGB buffer.
    fn inked(buf: &[u8]) -> usize {
        buf.chunks(3).filter(|p| p.iter().any(|&c| c < 200)).count()
    }

    #[test]
    fn text_is_drawn_without_any_system_font() {
        use plotters::prelude::*;
        assert!(register());
        let mut buf = vec![255u8; 200 * 60 * 3];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (200, 60)).into_drawing_area();
            root.draw_text("epoch 12", &(FAMILY, 24).into_font().color(&BLACK), (5, 15)).unwrap();
            root.present().unwrap();
        }
        assert!(inked(&buf) > 50, "no text pixels drawn ({} inked)", inked(&buf));
    }

    #[test]
    fn the_report_plot_is_labelled() {
        let path = std::env::temp_dir().join(format!("esper-font-plot-{}.png", std::process::id()));
        let note = super::super::plot(&path, &[]).unwrap();
        assert_eq!(note, None, "the plot says it has no labels");
        let _ = std::fs::remove_file(path);
    }
}
