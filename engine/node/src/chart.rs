//! Line charts as SVG files, drawn with plotters: labelled axes with ticks, a caption and a
//! legend. Every chart the CLI writes (demo, train, sim, bench) goes through here.

use anyhow::{Result, bail};
use plotters::prelude::*;
use std::path::Path;

/// Colours for series, in order (colour-blind-safe Dark2).
pub const PALETTE: [RGBColor; 7] = [
    RGBColor(0x1b, 0x9e, 0x77),
    RGBColor(0xd9, 0x5f, 0x02),
    RGBColor(0x75, 0x70, 0xb3),
    RGBColor(0xe7, 0x29, 0x8a),
    RGBColor(0x66, 0xa6, 0x1e),
    RGBColor(0xe6, 0xab, 0x02),
    RGBColor(0xa6, 0x76, 0x1d),
];

/// One line.
pub struct Series {
    /// Its legend entry.
    pub name: String,
    /// Its colour.
    pub colour: RGBColor,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
}

/// What the chart says.
pub struct Chart<'a> {
    /// The caption.
    pub title: &'a str,
    /// The x axis' label.
    pub x: &'a str,
    /// The y axis' label.
    pub y: &'a str,
    /// The y range; `None` for 0 to 10 % above the largest value.
    pub y_range: Option<(f64, f64)>,
}

/// Draws `series` into an SVG file at `path`.
pub fn lines(path: &Path, chart: &Chart<'_>, series: &[Series]) -> Result<()> {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let (x0, x1) = if x0.is_finite() { (x0, x1.max(x0 + 1.0)) } else { (0.0, 1.0) };
    let (y0, y1) = chart.y_range.unwrap_or_else(|| {
        let top =
            series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|y| y.is_finite()).fold(0.0, f64::max);
        (0.0, if top > 0.0 { top * 1.1 } else { 1.0 })
    });
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        root.fill(&WHITE)?;
        let mut c = ChartBuilder::on(&root)
            .caption(chart.title, ("sans-serif", 14))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        // Rounds and epochs are whole numbers: label them so.
        let whole = |v: &f64| if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") };
        c.configure_mesh()
            .x_desc(chart.x)
            .y_desc(chart.y)
            .x_label_formatter(&whole)
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for s in series {
            let colour = s.colour;
            c.draw_series(LineSeries::new(s.points.iter().copied(), colour.stroke_width(2)))?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2)));
        }
        if series.iter().any(|s| !s.name.is_empty()) {
            c.configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .draw()?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
    if !path.exists() {
        bail!("{} was not written", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_its_labels_ticks_and_legend() {
        let d = tempfile::tempdir().expect("dir");
        let p = d.path().join("c.svg");
        let s = |name: &str, k: f64| Series {
            name: name.into(),
            colour: PALETTE[0],
            points: (0..10).map(|i| (f64::from(i), k * f64::from(i))).collect(),
        };
        lines(&p, &Chart { title: "t1tle", x: "round", y: "GB/s", y_range: None }, &[s("ours", 1.0), s("quinn", 2.0)])
            .expect("draw");
        let svg = std::fs::read_to_string(&p).expect("svg");
        for needle in ["\nt1tle\n", "\nround\n", "\nGB/s\n", "\nours\n", "\nquinn\n"] {
            assert!(svg.contains(needle), "{needle:?} missing");
        }
        // A line and a legend swatch per series; ticks: several numbered labels on the axes.
        assert_eq!(svg.matches("stroke-width=\"2\" points=").count(), 4);
        assert!(svg.matches("<text").count() > 10);
        // No points at all still draws an empty, labelled chart.
        lines(&p, &Chart { title: "empty", x: "x", y: "y", y_range: Some((0.0, 1.0)) }, &[]).expect("empty");
    }
}
