//! The end-of-run report as the `esper` binary shows it: a per-epoch table on stdout and
//! a plot of validation accuracy and each slot's alpha against epoch (`report.png`,
//! plotters, labelled with the embedded font, published through tmp + rename).
//! `report.json` is the runtime's
//! ([`esper_runtime::train::report::write_json`]).

mod font;
pub mod tensorboard;

use anyhow::{Context, Result};
use esper_runtime::{plugin::text::sanitize, train::report::EpochRecord};
use std::{fmt::Write as _, path::Path};

/// The table printed at the end of a run: a row per epoch, each slot's stage and alpha,
/// and the epoch's events (a failed germination among them: the slot stays DORMANT and
/// the row says why). A row's events are cut at
/// [`MAX_TEXT_BYTES`](esper_runtime::plugin::text::MAX_TEXT_BYTES); `report.json` has
/// them whole.
pub fn table(history: &[EpochRecord]) -> String {
    let mut out = String::new();
    let slots: Vec<&str> =
        history.first().map(|r| r.slots.iter().map(|s| s.slot.as_str()).collect()).unwrap_or_default();
    // Text runs (next-token prediction) add the validation perplexity.
    let text = history.iter().any(|r| r.val_perplexity.is_some());
    let _ = write!(out, "{:>5} {:>10} {:>9} {:>9} {:>8}", "epoch", "train_loss", "train_acc", "val_loss", "val_acc");
    if text {
        let _ = write!(out, " {:>9}", "val_ppl");
    }
    for s in &slots {
        let _ = write!(out, "  {:<18}", format!("{s} stage/alpha"));
    }
    out.push('\n');
    for r in history {
        let _ = write!(
            out,
            "{:>5} {:>10.4} {:>8.2}% {:>9.4} {:>7.2}%",
            r.epoch, r.train_loss, r.train_accuracy, r.val_loss, r.val_accuracy
        );
        if text {
            let _ = write!(out, " {:>9.2}", r.val_perplexity.unwrap_or(f64::NAN));
        }
        for s in &r.slots {
            let _ = write!(out, "  {:<18}", format!("{} {:.2}", s.stage, s.alpha));
        }
        // Gate evaluations stay in report.json; a pass shows here as its stage change.
        let headlines: Vec<String> = r.events.iter().filter(|e| e.is_headline()).map(ToString::to_string).collect();
        if !headlines.is_empty() {
            let _ = write!(out, "  {}", sanitize(&headlines.join("; ")));
        }
        out.push('\n');
    }
    out
}

/// The size of `report.png`, in pixels.
const PLOT_SIZE: (u32, u32) = (960, 540);

/// Plots validation accuracy (left axis, %) and each slot's alpha (scaled to 0-100)
/// against epoch, labelled with the embedded font (`report/font.rs`). Should that font
/// fail to load, the plot is drawn without text (and says so in the returned note).
/// Drawn in memory and published through tmp + rename (a failed write keeps the
/// previous plot; a link at `path` is refused).
pub fn plot(path: &Path, history: &[EpochRecord]) -> Result<Option<&'static str>> {
    let (w, h) = PLOT_SIZE;
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    let labelled = draw(&mut rgb, history)?;
    let mut png = Vec::new();
    image::ImageEncoder::write_image(image::codecs::png::PngEncoder::new(&mut png), &rgb, w, h, image::ColorType::Rgb8)
        .context("encoding the plot as PNG")?;
    esper_runtime::run_folder::files::publish(path, &png).with_context(|| format!("writing {}", path.display()))?;
    Ok((!labelled).then_some("the embedded font did not load: the plot has no labels"))
}

/// Draws [`plot`]'s chart into `rgb` (8-bit RGB, [`PLOT_SIZE`]); whether it has labels.
fn draw(rgb: &mut [u8], history: &[EpochRecord]) -> Result<bool> {
    use plotters::prelude::*;
    let labelled = font::register();
    let root = BitMapBackend::with_buffer(rgb, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let epochs = history.last().map_or(1, |r| r.epoch).max(1);
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if labelled {
        builder
            .caption("validation accuracy and seed alpha", ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(50);
    }
    let mut chart = builder.build_cartesian_2d(0u32..epochs, 0f64..100f64)?;
    if labelled {
        chart.configure_mesh().x_desc("epoch").y_desc("accuracy % / alpha x 100").draw()?;
    }
    let acc = LineSeries::new(history.iter().map(|r| (r.epoch, r.val_accuracy)), BLUE.stroke_width(2));
    let s = chart.draw_series(acc)?;
    if labelled {
        s.label("val accuracy").legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    }
    let colors = [RED, GREEN, MAGENTA, CYAN, BLACK];
    let slot_names: Vec<String> =
        history.first().map(|r| r.slots.iter().map(|s| s.slot.clone()).collect()).unwrap_or_default();
    for (i, name) in slot_names.iter().enumerate() {
        let color = colors[i % colors.len()];
        let points =
            history.iter().filter_map(|r| r.slots.iter().find(|s| &s.slot == name).map(|s| (r.epoch, s.alpha * 100.0)));
        let s = chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?;
        if labelled {
            s.label(format!("{name} alpha")).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
    }
    if labelled {
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    }
    root.present()?;
    Ok(labelled)
}

/// Plots a comparison (`esper compare`): final validation accuracy per run as bars,
/// each labelled with its blueprint, seed parameters and step time.
pub fn plot_compare(path: &Path, rows: &[esper_runtime::train::compare::CompareRow]) -> Result<()> {
    use plotters::prelude::*;
    let labelled = font::register();
    let root = BitMapBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = rows.len().max(1) as u32;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if labelled {
        builder
            .caption("final validation accuracy by blueprint", ("sans-serif", 22))
            .x_label_area_size(60)
            .y_label_area_size(50);
    }
    // Zoomed to the accuracies shown (they differ by a few points), never past 100.
    let top = rows.iter().map(|r| r.final_val_accuracy).fold(0.0, f64::max);
    let y_max = (top * 1.15 + 5.0).min(100.0);
    let mut chart = builder.build_cartesian_2d(0u32..n, 0f64..y_max)?;
    if labelled {
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(rows.len().max(1))
            .x_label_formatter(&|i| rows.get(*i as usize).map_or(String::new(), |r| r.name().to_string()))
            .y_desc("val accuracy %")
            .draw()?;
    }
    chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
        let color = if r.blueprint.is_none() { BLACK.mix(0.4) } else { BLUE.mix(0.7) };
        let mut bar = Rectangle::new([(i as u32, 0.0), (i as u32 + 1, r.final_val_accuracy)], color.filled());
        bar.set_margin(0, 0, 8, 8);
        bar
    }))?;
    if labelled {
        // Above each bar its accuracy; inside, its seed parameters and step time.
        let line = |i: usize, y: f64, text: String, color: RGBColor| {
            Text::new(text, (i as u32, y), ("sans-serif", 12).into_font().color(&color))
        };
        let gap = y_max / 40.0;
        chart.draw_series(rows.iter().enumerate().flat_map(|(i, r)| {
            [
                line(i, r.final_val_accuracy + 1.5 * gap, format!("   {:.1}%", r.final_val_accuracy), BLACK),
                line(i, 4.0 * gap, format!("   {} params", r.seed_parameters), WHITE),
                line(i, 2.5 * gap, format!("   {:.1} ms/step", r.step_ms), WHITE),
            ]
        }))?;
    }
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use esper_runtime::{
        lifecycle::{LifecycleEvent, SeedStage},
        train::report::SlotRecord,
    };

    fn rows() -> Vec<EpochRecord> {
        (1..=3)
            .map(|e| EpochRecord {
                epoch: e,
                train_loss: 1.0 / e as f64,
                train_accuracy: 10.0 * e as f64,
                val_loss: 1.0,
                val_accuracy: 20.0 * e as f64,
                val_perplexity: None,
                seconds: 1.0,
                steps: 4,
                train_seconds: 0.5,
                slots: vec![SlotRecord {
                    slot: "r0c1".into(),
                    stage: SeedStage::Blending,
                    alpha: e as f64 / 3.0,
                    contribution: None,
                    seed: None,
                }],
                events: if e == 2 { vec![LifecycleEvent::Note("r0c1: advanced to BLENDING".into())] } else { vec![] },
            })
            .collect()
    }

    #[test]
    fn table_has_a_row_per_epoch_with_slot_columns() {
        let t = table(&rows());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].contains("r0c1 stage/alpha"));
        assert!(lines[2].contains("BLENDING 0.67") && lines[2].contains("advanced to BLENDING"), "{}", lines[2]);
    }

    #[test]
    fn text_runs_add_the_validation_perplexity() {
        assert!(!table(&rows()).contains("val_ppl"));
        let mut history = rows();
        for (r, p) in history.iter_mut().zip([40.5, 12.25, 7.0]) {
            r.val_perplexity = Some(p);
        }
        let t = table(&history);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("val_acc   val_ppl"), "{t}");
        assert!(lines[2].contains("40.00%     12.25"), "{t}");
    }

    #[test]
    fn a_failed_germination_shows_in_its_row_and_a_row_stays_short() {
        use esper_runtime::{lifecycle::GerminationFailure, plugin::text::MAX_TEXT_BYTES};
        let mut history = rows();
        let failed = |slot: &str| LifecycleEvent::GerminationFailed {
            slot: slot.into(),
            blueprint: "cnn:norm".into(),
            plugin: Some("/p/libesper_norm.so".into()),
            cause: GerminationFailure::BadOptions,
            reason: format!("unknown field `widht` {}", "x".repeat(MAX_TEXT_BYTES - 100)),
        };
        history[0].slots[0].stage = SeedStage::Dormant;
        history[0].events = vec![failed("r0c1"), failed("r1c1"), failed("r2c1")];
        let t = table(&history);
        let row = t.lines().nth(1).unwrap();
        assert!(row.contains("DORMANT 0.33 "), "{row}");
        assert!(
            row.contains("r0c1: germination of cnn:norm failed, the slot stays DORMANT: unknown field `widht`"),
            "{row}"
        );
        assert!(row.len() < MAX_TEXT_BYTES + 200 && row.ends_with(" bytes cut]"), "{} bytes", row.len());
    }

    #[test]
    fn plot_writes_a_png() {
        let path = std::env::temp_dir().join(format!("esper-plot-{}.png", std::process::id()));
        plot(&path, &rows()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let _ = std::fs::remove_file(path);
    }
}
