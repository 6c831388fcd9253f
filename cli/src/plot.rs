//! Charts as SVG or PNG, drawn with `plotters`: a training run's curves and the search's
//! Figure 6. Ranges come from the data with a margin (a flat series gets a narrow band around
//! its value), counts get integer ticks, and every chart has a legend. Text is set in DejaVu
//! Sans, compiled in, so a PNG looks the same on a machine without fonts.

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context;
use nasnet_search::train::{EpochMetrics, StepMetrics};
use plotters::coord::Shift;
use plotters::prelude::*;

/// Line colors, one per series (matplotlib's first four).
const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

/// One named series of `(x, y)` points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
    /// Circles at the points (sparse series: one per epoch).
    pub markers: bool,
    /// A thin line (dense series: one point per logged step).
    pub thin: bool,
}

impl<'a> Series<'a> {
    /// A line with markers.
    pub fn new(name: &'a str, points: Vec<(f64, f64)>) -> Self {
        Self {
            name,
            points,
            markers: true,
            thin: false,
        }
    }
}

/// One chart panel.
pub struct Panel<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    /// The x values are counts: integer ticks only.
    pub integer_x: bool,
    /// Where the legend goes (where the lines are not).
    pub legend: SeriesLabelPosition,
    pub series: Vec<Series<'a>>,
}

/// A number as a tick label: no more digits than the range needs.
fn tick(v: f64, span: f64) -> String {
    let digits = if span >= 20.0 {
        0
    } else {
        (2.0 - span.log10().floor()).clamp(1.0, 5.0) as usize
    };
    format!("{v:.digits$}")
}

/// `[lo, hi]` of the finite values, `None` when there are none.
fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// The y range: the data with 8% of its span on each side; a flat series gets a band of 5%
/// of its value (at least 0.01) around it.
fn y_range(points: &[(f64, f64)]) -> Range<f64> {
    let (lo, hi) = bounds(points.iter().map(|p| p.1)).unwrap_or((0.0, 1.0));
    let span = hi - lo;
    let pad = if span > 1e-9 * hi.abs().max(1.0) {
        span * 0.08
    } else {
        (hi.abs() * 0.05).max(0.01)
    };
    lo - pad..hi + pad
}

/// The x range: from 0 (the start of training, or of the search) to a little past the last
/// point, so that a marker on it is drawn whole.
fn x_range(points: &[(f64, f64)]) -> Range<f64> {
    let (_, hi) = bounds(points.iter().map(|p| p.0)).unwrap_or((0.0, 1.0));
    0.0..hi.max(1.0) * 1.02
}

/// Registers DejaVu Sans as plotters' "sans-serif" (once): it measures the text of both
/// formats and draws the PNG's.
fn fonts() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "the compiled-in DejaVu Sans font is invalid".to_string())
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Draws one panel; `k` scales every length (text, margins, lines) for a larger canvas.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    k: u32,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let all: Vec<(f64, f64)> = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter(finite).copied())
        .collect();
    let (xs, ys) = (x_range(&all), y_range(&all));
    let y_span = ys.end - ys.start;
    let x_span = xs.end - xs.start;
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, ("sans-serif", 18 * k))
        .margin(12 * k)
        .x_label_area_size(40 * k)
        .y_label_area_size(56 * k)
        .build_cartesian_2d(xs, ys)?;
    let y_fmt = |v: &f64| tick(*v, y_span);
    let x_fmt = |v: &f64| tick(*v, x_span);
    // Counts: a label only where the tick is a whole number.
    let count_fmt = |v: &f64| {
        if (v - v.round()).abs() < 1e-6 {
            format!("{:.0}", v.round())
        } else {
            String::new()
        }
    };
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(panel.x_label)
        .light_line_style(RGBColor(238, 238, 238))
        .y_label_formatter(&y_fmt)
        .label_style(("sans-serif", 12 * k))
        .axis_desc_style(("sans-serif", 12 * k));
    if panel.integer_x {
        mesh.x_labels((x_span as usize + 1).min(10))
            .x_label_formatter(&count_fmt);
    } else {
        mesh.x_label_formatter(&x_fmt);
    }
    mesh.draw()?;
    for (i, s) in panel.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = s.points.iter().filter(finite).copied().collect();
        let width = if s.thin { k } else { 2 * k };
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(width)))?
            .label(s.name)
            .legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 20 * k as i32, y)],
                    color.stroke_width(2 * k),
                )
            });
        if s.markers {
            chart.draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 3 * k, color.filled())),
            )?;
        }
    }
    chart
        .configure_series_labels()
        .position(panel.legend.clone())
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(190, 190, 190))
        .label_font(("sans-serif", 13 * k))
        .legend_area_size(30 * k)
        .margin(10 * k)
        .draw()?;
    Ok(())
}

/// The chart formats, by file extension.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    Svg,
    Png,
}

fn format_of(path: &Path) -> anyhow::Result<Format> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("svg") => Ok(Format::Svg),
        Some(e) if e.eq_ignore_ascii_case("png") => Ok(Format::Png),
        _ => anyhow::bail!(
            "{}: charts are SVG or PNG; name the file .svg or .png",
            path.display()
        ),
    }
}

fn draw_all<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    panels: &[Panel],
    k: u32,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    for (area, panel) in root
        .split_evenly((1, panels.len().max(1)))
        .iter()
        .zip(panels)
    {
        draw_panel(area, panel, k)?;
    }
    root.present()?;
    Ok(())
}

/// Draws `panels` side by side into an SVG or PNG file (by its extension), written through a
/// temporary file and a rename.
pub fn write_panels(path: &Path, panels: &[Panel]) -> anyhow::Result<()> {
    let format = format_of(path)?;
    fonts()?;
    let size = (480 * panels.len().max(1) as u32, 360);
    let drawing = || format!("drawing {}", path.display());
    let bytes = match format {
        Format::Svg => {
            let mut svg = String::new();
            draw_all(
                SVGBackend::with_string(&mut svg, size).into_drawing_area(),
                panels,
                1,
            )
            .with_context(drawing)?;
            svg.into_bytes()
        }
        Format::Png => {
            // Twice the SVG's size, everything scaled, so that the PNG stays sharp on
            // high-density screens.
            const K: u32 = 2;
            let (w, h) = (size.0 * K, size.1 * K);
            let mut rgb = vec![0u8; w as usize * h as usize * 3];
            let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
            draw_all(root, panels, K).with_context(drawing)?;
            let image = image::RgbImage::from_raw(w, h, rgb)
                .context("the PNG buffer does not match its size")?;
            let mut png = std::io::Cursor::new(Vec::new());
            image
                .write_to(&mut png, image::ImageFormat::Png)
                .with_context(|| format!("encoding {}", path.display()))?;
            png.into_inner()
        }
    };
    nasnet_core::fsutil::write_file_atomically(path, |tmp| -> anyhow::Result<()> {
        std::fs::write(tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))
    })
}

/// `curves.svg` of a training run: the training loss every logged step and per epoch with the
/// validation loss, and the accuracies per epoch.
pub fn write_curves(
    path: &Path,
    epochs: &[EpochMetrics],
    steps: &[StepMetrics],
) -> anyhow::Result<()> {
    let per_epoch = |f: &dyn Fn(&EpochMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
        epochs
            .iter()
            .filter_map(|r| f(r).map(|v| (r.epoch as f64, v)))
            .collect()
    };
    let mut loss = vec![];
    if !steps.is_empty() {
        loss.push(Series {
            name: "train, logged steps",
            points: steps.iter().map(|s| (s.epoch, s.loss)).collect(),
            markers: false,
            thin: true,
        });
    }
    loss.push(Series::new(
        "train, epoch mean",
        per_epoch(&|r| Some(r.train_loss)),
    ));
    loss.push(Series::new("validation", per_epoch(&|r| r.val_loss)));
    write_panels(
        path,
        &[
            Panel {
                title: "loss",
                x_label: "epoch",
                integer_x: false,
                legend: SeriesLabelPosition::UpperRight,
                series: loss,
            },
            Panel {
                title: "accuracy",
                x_label: "epoch",
                integer_x: false,
                // Accuracy rises: the upper left is free, and a one-epoch run's points are at
                // the right edge.
                legend: SeriesLabelPosition::UpperLeft,
                series: vec![
                    Series::new("train", per_epoch(&|r| Some(r.train_acc))),
                    Series::new("validation", per_epoch(&|r| r.val_acc)),
                ],
            },
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_sensible() {
        // A flat series: a narrow band around its value, not 0.16 to 1.26.
        let r = y_range(&[(1.0, 0.71), (2.0, 0.71)]);
        assert!(r.start > 0.67 && r.end < 0.75, "{r:?}");
        let r = y_range(&[(1.0, 0.5), (2.0, 0.9)]);
        assert!(
            (r.start - 0.468).abs() < 1e-9 && (r.end - 0.932).abs() < 1e-9,
            "{r:?}"
        );
        // One epoch: the axis runs from 0 to just past 1, not 0.5 to 1.5.
        assert_eq!(x_range(&[(1.0, 0.3)]), 0.0..1.02);
        assert_eq!(x_range(&[(0.25, 0.3), (60.0, 0.3)]), 0.0..61.2);
        assert_eq!(tick(0.123456, 0.05), "0.1235");
        assert_eq!(tick(12.0, 100.0), "12");
    }

    #[test]
    fn a_chart_is_svg_with_every_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.svg");
        let panel = Panel {
            title: "best reward",
            x_label: "models",
            integer_x: true,
            legend: SeriesLabelPosition::LowerRight,
            series: vec![Series::new("rl", vec![(1.0, 0.5), (2.0, 0.6), (3.0, 0.6)])],
        };
        write_panels(&path, &[panel]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        // plotters writes each text element's content on a line of its own.
        let texts: Vec<&str> = svg.lines().map(str::trim).collect();
        for text in ["best reward", "models", "rl", "3"] {
            assert!(texts.contains(&text), "{text} missing");
        }
        // Integer axis: no fractional model counts.
        assert!(!texts.contains(&"1.5") && !texts.contains(&"2.5"));
        let err = write_panels(&dir.path().join("c.pdf"), &[]).unwrap_err();
        assert!(
            err.to_string().contains("c.pdf: charts are SVG or PNG"),
            "{err}"
        );
    }

    #[test]
    fn a_png_chart_has_its_lines_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        let panel = |legend| Panel {
            title: "loss",
            x_label: "epoch",
            integer_x: false,
            legend,
            series: vec![Series::new("train", vec![(1.0, 0.9), (2.0, 0.5)])],
        };
        write_panels(&path, &[panel(SeriesLabelPosition::UpperRight)]).unwrap();
        let png = image::open(&path).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), (960, 720));
        let count = |c: [u8; 3]| png.pixels().filter(|p| p.0 == c).count();
        // The series' blue line, and dark text (title, ticks, legend) from the compiled-in font.
        assert!(count([31, 119, 180]) > 200, "no line drawn");
        let dark = png.pixels().filter(|p| p.0.iter().all(|&v| v < 80)).count();
        assert!(dark > 500, "no text drawn ({dark} dark pixels)");
    }
}
