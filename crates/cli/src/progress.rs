//! Progress of a long operation: a bar on a terminal (indicatif, which also
//! keeps the rate and the ETA), and a plain line per step where stderr is a
//! pipe or a log, so it can be followed there too.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    plain: bool,
    what: &'static str,
    unit: &'static str,
}

impl Progress {
    /// A bar of `total` `unit`s, e.g. `replay [####----] 120/300 events`.
    pub fn bar(what: &'static str, unit: &'static str, total: u64) -> Self {
        let (bar, plain) = Self::target(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{what} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{percent}}%), {{per_sec}}, ETA {{eta}}"
            ))
            .expect("a valid template")
            .progress_chars("#-"),
        );
        Progress {
            bar,
            plain,
            what,
            unit,
        }
    }

    /// A spinner for work of unknown size; [`Progress::say`] tells how far.
    pub fn spinner(what: &'static str) -> Self {
        let (bar, plain) = Self::target(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template(&format!("{what}: {{msg}} {{spinner}}"))
                .expect("a valid template"),
        );
        Progress {
            bar,
            plain,
            what,
            unit: "",
        }
    }

    fn target(bar: ProgressBar) -> (ProgressBar, bool) {
        if std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            (bar, false)
        } else {
            bar.set_draw_target(ProgressDrawTarget::hidden());
            (bar, true)
        }
    }

    /// `done` of the bar's total.
    pub fn set(&self, done: u64) {
        self.bar.set_position(done);
        if self.plain {
            let total = self.bar.length().unwrap_or(done);
            let percent = if total == 0 {
                100.0
            } else {
                done as f64 * 100.0 / total as f64
            };
            eprintln!(
                "{} {done}/{total} {} ({percent:.0}%), {:.0}/s, ETA {}s",
                self.what,
                self.unit,
                self.bar.per_sec(),
                self.bar.eta().as_secs()
            );
        }
    }

    /// How far a spinner's work got.
    pub fn say(&self, message: String) {
        if self.plain {
            eprintln!("{}: {message}", self.what);
        }
        self.bar.set_message(message);
    }

    pub fn finish(&self) {
        self.bar.finish();
    }
}
