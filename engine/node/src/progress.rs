//! Progress bars for long commands (indicatif), on stderr; hidden when stderr is not a terminal,
//! so logs and piped output stay clean.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps named `unit` (round, epoch, …), with elapsed time, ETA and a message.
pub fn bar(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template = format!("{{spinner}} {unit} {{pos}}/{{len}} [{{bar:30}}] {{elapsed_precise}} eta {{eta}} {{msg}}");
    // The template is a constant but for the unit's name, which holds no braces.
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Prints `line` above `bar` (or to stdout when the bar is hidden).
pub fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() { println!("{line}") } else { bar.println(line) }
}
