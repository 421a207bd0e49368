//! What the user sees while a method trains: a bar over the steps where the `progress`
//! feature is on, and one line per epoch either way.

use papa_train::report::EpochRecord;
use papa_train::train::Progress;

/// One epoch as a line: loss, member range, averaged model, diversity, time.
fn epoch_line(method: &str, epochs: usize, r: &EpochRecord) -> String {
    let (lo, hi) = r
        .member_test_acc
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &a| {
            (lo.min(a), hi.max(a))
        });
    let distance = r.distance_to_mean.iter().sum::<f64>() / r.distance_to_mean.len().max(1) as f64;
    let average = r
        .average_test_acc
        .map_or("n/a".to_string(), |a| format!("{a:.2}%"));
    format!(
        "{method:>9} epoch {}/{epochs}: loss {:.3}, members {lo:.2}-{hi:.2}%, average model {average}, \
         distance to mean {distance:.3}, pairwise cosine {:.3}, {:.0} s",
        r.epoch + 1,
        r.train_loss,
        r.mean_pairwise_cosine,
        r.seconds
    )
}

/// The progress of one method.
pub struct MethodProgress {
    method: &'static str,
    epochs: usize,
    #[cfg(feature = "progress")]
    bar: indicatif::ProgressBar,
}

impl MethodProgress {
    /// Starts showing the progress of `method` over `epochs` epochs.
    pub fn new(method: &'static str, epochs: usize) -> Self {
        #[cfg(feature = "progress")]
        let bar = {
            let bar = indicatif::ProgressBar::new(0).with_message(method);
            // The template is a constant; should it ever be refused, the bar keeps the
            // default style.
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg:>9} [{bar:40}] {pos}/{len} steps {elapsed}<{eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        };
        MethodProgress {
            method,
            epochs,
            #[cfg(feature = "progress")]
            bar,
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        #[cfg(feature = "progress")]
        self.bar.finish_and_clear();
    }
}

impl Progress for MethodProgress {
    fn step(&self, _done: u64, _total: u64) {
        #[cfg(feature = "progress")]
        {
            self.bar.set_length(_total);
            self.bar.set_position(_done);
        }
    }

    fn epoch(&self, record: &EpochRecord) {
        let line = epoch_line(self.method, self.epochs, record);
        // A hidden bar (stderr not a terminal: a log file) drops what it prints.
        #[cfg(feature = "progress")]
        if !self.bar.is_hidden() {
            self.bar.println(line);
            return;
        }
        note!("{line}");
    }
}
