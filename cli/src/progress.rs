//! Progress bars for a run (indicatif): one for epochs, one for the batches of the
//! current epoch. They draw only on a terminal (see [`crate::telemetry::init`]).

use esper_runtime::train::{report::EpochRecord, Observer};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// The trainer's [`Observer`] drawing the bars into `progress`.
pub struct Bars {
    progress: MultiProgress,
    epochs: Option<ProgressBar>,
    batches: Option<ProgressBar>,
}

impl Bars {
    pub fn new(progress: &MultiProgress) -> Self {
        Self { progress: progress.clone(), epochs: None, batches: None }
    }

    fn bar(&self, len: u64, template: &str) -> ProgressBar {
        let bar = self.progress.add(ProgressBar::new(len));
        // The templates are constants of this file; a bad one is a bug caught by the tests.
        bar.set_style(ProgressStyle::with_template(template).expect("a valid progress template"));
        bar
    }
}

impl Observer for Bars {
    fn run_started(&mut self, first: u32, last: u32) {
        let bar = self.bar(last as u64, "epochs  {bar:30} {pos}/{len} {msg}");
        bar.set_position(first.saturating_sub(1) as u64);
        self.epochs = Some(bar);
    }

    fn epoch_started(&mut self, _epoch: u32, batches: usize) {
        self.batches = Some(self.bar(batches as u64, "batches {bar:30} {pos}/{len}"));
    }

    fn batch_done(&mut self) {
        if let Some(bar) = &self.batches {
            bar.inc(1);
        }
    }

    fn epoch_done(&mut self, record: &EpochRecord) {
        if let Some(bar) = self.batches.take() {
            bar.finish_and_clear();
        }
        if let Some(bar) = &self.epochs {
            bar.set_position(record.epoch as u64);
            bar.set_message(match record.val_perplexity {
                Some(perplexity) => format!("val ppl {perplexity:.2}"),
                None => format!("val {:.1}%", record.val_accuracy),
            });
        }
    }

    fn run_done(&mut self) {
        if let Some(bar) = self.epochs.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::ProgressDrawTarget;

    #[test]
    fn the_bars_follow_the_run() {
        let progress = MultiProgress::with_draw_target(ProgressDrawTarget::hidden());
        let mut bars = Bars::new(&progress);
        bars.run_started(3, 5);
        assert_eq!(bars.epochs.as_ref().map(|b| (b.position(), b.length())), Some((2, Some(5))));
        bars.epoch_started(3, 4);
        bars.batch_done();
        bars.batch_done();
        assert_eq!(bars.batches.as_ref().map(ProgressBar::position), Some(2));
        let record = esper_runtime::train::report::EpochRecord {
            epoch: 3,
            train_loss: 1.0,
            train_accuracy: 50.0,
            val_loss: 1.0,
            val_accuracy: 42.0,
            val_perplexity: None,
            seconds: 1.0,
            steps: 4,
            train_seconds: 0.5,
            slots: vec![],
            events: vec![],
        };
        bars.epoch_done(&record);
        assert!(bars.batches.is_none());
        let epochs = bars.epochs.as_ref().unwrap();
        assert_eq!((epochs.position(), epochs.message()), (3, "val 42.0%".to_string()));
        bars.epoch_done(&esper_runtime::train::report::EpochRecord { val_perplexity: Some(7.25), ..record });
        assert_eq!(bars.epochs.as_ref().unwrap().message(), "val ppl 7.25");
        bars.run_done();
        assert!(bars.epochs.is_none());
    }
}
