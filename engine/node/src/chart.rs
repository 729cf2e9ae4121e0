//! Line charts as SVG and PNG files, drawn with plotters: labelled axes with ticks, a caption
//! and a legend. Every chart the CLI writes (demo, train, sim, bench) goes through here.

use anyhow::{Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// The PNG's text is drawn with this font, embedded so a chart looks the same on a machine with
/// no fonts installed (DejaVu Sans; assets/fonts/LICENSE.txt).
const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Chart size in pixels (the SVG's user units too).
const SIZE: (u32, u32) = (900, 480);

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

/// Draws `series` into an SVG file at `path` and the same chart as a PNG next to it (the path
/// with the extension `png`); gives the PNG's path.
pub fn lines(path: &Path, chart: &Chart<'_>, series: &[Series]) -> Result<PathBuf> {
    static FONT_REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*FONT_REGISTERED.get_or_init(|| plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()) {
        bail!("the embedded chart font does not load");
    }
    draw(SVGBackend::new(path, SIZE).into_drawing_area(), chart, series)
        .map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
    let png = path.with_extension("png");
    draw(BitMapBackend::new(&png, SIZE).into_drawing_area(), chart, series)
        .map_err(|e| anyhow::anyhow!("drawing {}: {e}", png.display()))?;
    for p in [path, png.as_path()] {
        if !p.exists() {
            bail!("{} was not written", p.display());
        }
    }
    Ok(png)
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &Chart<'_>, series: &[Series]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let (x0, x1) = if x0.is_finite() { (x0, x1.max(x0 + 1.0)) } else { (0.0, 1.0) };
    let (y0, y1) = chart.y_range.unwrap_or_else(|| {
        let top =
            series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|y| y.is_finite()).fold(0.0, f64::max);
        (0.0, if top > 0.0 { top * 1.1 } else { 1.0 })
    });
    {
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
    }
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
        let png = lines(
            &p,
            &Chart { title: "t1tle", x: "round", y: "GB/s", y_range: None },
            &[s("ours", 1.0), s("quinn", 2.0)],
        )
        .expect("draw");
        let svg = std::fs::read_to_string(&p).expect("svg");
        for needle in ["\nt1tle\n", "\nround\n", "\nGB/s\n", "\nours\n", "\nquinn\n"] {
            assert!(svg.contains(needle), "{needle:?} missing");
        }
        // A line and a legend swatch per series; ticks: several numbered labels on the axes.
        assert_eq!(svg.matches("stroke-width=\"2\" points=").count(), 4);
        assert!(svg.matches("<text").count() > 10);
        // The PNG: the chart's size, a white background, the two series' colour, and text (dark
        // pixels where the caption is drawn).
        let img = image::open(&png).expect("png").to_rgb8();
        assert_eq!(img.dimensions(), SIZE);
        assert_eq!(img.get_pixel(2, 2).0, [255, 255, 255]);
        let of = |c: RGBColor| img.pixels().filter(|p| p.0 == [c.0, c.1, c.2]).count();
        assert!(of(PALETTE[0]) > 500, "series pixels: {}", of(PALETTE[0]));
        let caption = (380..520).flat_map(|x| (0..30).map(move |y| (x, y)));
        assert!(caption.filter(|&(x, y)| img.get_pixel(x, y).0[0] < 128).count() > 20, "no caption drawn");
        // No points at all still draws an empty, labelled chart.
        lines(&p, &Chart { title: "empty", x: "x", y: "y", y_range: Some((0.0, 1.0)) }, &[]).expect("empty");
    }
}
