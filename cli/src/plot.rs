//! Line charts as PNG without a font dependency: a built-in 5x7 pixel font for the few labels
//! a chart needs.

use std::path::Path;

use anyhow::Context;
use image::{Rgb, RgbImage};
use nasnet_search::train::EpochMetrics;

const BG: Rgb<u8> = Rgb([255, 255, 255]);
const AXIS: Rgb<u8> = Rgb([60, 60, 60]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
/// Line colors, one per series.
pub const COLORS: [Rgb<u8>; 4] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
];

/// 5x7 glyphs, one row per string, `#` set.
fn glyph(c: char) -> [&'static str; 7] {
    match c {
        '0' => [
            " ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### ",
        ],
        '1' => [
            "  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### ",
        ],
        '2' => [
            " ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####",
        ],
        '3' => [
            "#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### ",
        ],
        '4' => [
            "   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # ",
        ],
        '5' => [
            "#####", "#    ", "#### ", "    #", "    #", "#   #", " ### ",
        ],
        '6' => [
            "  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### ",
        ],
        '7' => [
            "#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   ",
        ],
        '8' => [
            " ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### ",
        ],
        '9' => [
            " ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  ",
        ],
        '.' => [
            "     ", "     ", "     ", "     ", "     ", " ##  ", " ##  ",
        ],
        '-' => [
            "     ", "     ", "     ", "#####", "     ", "     ", "     ",
        ],
        '/' => [
            "    #", "    #", "   # ", "  #  ", " #   ", "#    ", "#    ",
        ],
        '%' => [
            "##   ", "##  #", "   # ", "  #  ", " #   ", "#  ##", "   ##",
        ],
        '(' => [
            "   # ", "  #  ", " #   ", " #   ", " #   ", "  #  ", "   # ",
        ],
        ')' => [
            " #   ", "  #  ", "   # ", "   # ", "   # ", "  #  ", " #   ",
        ],
        'a' => [
            "     ", "     ", " ### ", "    #", " ####", "#   #", " ####",
        ],
        'b' => [
            "#    ", "#    ", "#### ", "#   #", "#   #", "#   #", "#### ",
        ],
        'c' => [
            "     ", "     ", " ### ", "#    ", "#    ", "#   #", " ### ",
        ],
        'd' => [
            "    #", "    #", " ####", "#   #", "#   #", "#   #", " ####",
        ],
        'e' => [
            "     ", "     ", " ### ", "#   #", "#####", "#    ", " ### ",
        ],
        'f' => [
            "  ## ", " #  #", " #   ", "###  ", " #   ", " #   ", " #   ",
        ],
        'g' => [
            "     ", " ####", "#   #", "#   #", " ####", "    #", " ### ",
        ],
        'h' => [
            "#    ", "#    ", "# ## ", "##  #", "#   #", "#   #", "#   #",
        ],
        'i' => [
            "  #  ", "     ", " ##  ", "  #  ", "  #  ", "  #  ", " ### ",
        ],
        'j' => [
            "   # ", "     ", "  ## ", "   # ", "   # ", "#  # ", " ##  ",
        ],
        'k' => [
            "#    ", "#    ", "#  # ", "# #  ", "##   ", "# #  ", "#  # ",
        ],
        'l' => [
            " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### ",
        ],
        'm' => [
            "     ", "     ", "## # ", "# # #", "# # #", "#   #", "#   #",
        ],
        'n' => [
            "     ", "     ", "# ## ", "##  #", "#   #", "#   #", "#   #",
        ],
        'o' => [
            "     ", "     ", " ### ", "#   #", "#   #", "#   #", " ### ",
        ],
        'p' => [
            "     ", "     ", "#### ", "#   #", "#### ", "#    ", "#    ",
        ],
        'q' => [
            "     ", "     ", " ####", "#   #", " ####", "    #", "    #",
        ],
        'r' => [
            "     ", "     ", "# ## ", "##  #", "#    ", "#    ", "#    ",
        ],
        's' => [
            "     ", "     ", " ####", "#    ", " ### ", "    #", "#### ",
        ],
        't' => [
            " #   ", " #   ", "###  ", " #   ", " #   ", " #  #", "  ## ",
        ],
        'u' => [
            "     ", "     ", "#   #", "#   #", "#   #", "#  ##", " ## #",
        ],
        'v' => [
            "     ", "     ", "#   #", "#   #", "#   #", " # # ", "  #  ",
        ],
        'w' => [
            "     ", "     ", "#   #", "#   #", "# # #", "# # #", " # # ",
        ],
        'x' => [
            "     ", "     ", "#   #", " # # ", "  #  ", " # # ", "#   #",
        ],
        'y' => [
            "     ", "     ", "#   #", "#   #", " ####", "    #", " ### ",
        ],
        'z' => [
            "     ", "     ", "#####", "   # ", "  #  ", " #   ", "#####",
        ],
        _ => ["     "; 7],
    }
}

/// Draws `text` with its top-left corner at `(x, y)`, each font pixel `scale` pixels wide.
pub fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, color: Rgb<u8>, scale: i64) {
    for (k, c) in s.chars().enumerate() {
        let rows = glyph(c.to_ascii_lowercase());
        for (r, row) in rows.iter().enumerate() {
            for (col, b) in row.bytes().enumerate() {
                if b == b'#' {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            put(
                                img,
                                x + (k as i64 * 6 + col as i64) * scale + dx,
                                y + r as i64 * scale + dy,
                                color,
                            );
                        }
                    }
                }
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>, thick: i64) {
    let steps = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
    for i in 0..=steps {
        let x = x0 + (x1 - x0) * i / steps;
        let y = y0 + (y1 - y0) * i / steps;
        for d in 0..thick {
            put(img, x, y + d - thick / 2, c);
            put(img, x + d - thick / 2, y, c);
        }
    }
}

fn label(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// One chart panel: named series of `(x, y)` points.
pub struct Panel<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub series: Vec<(&'a str, Vec<(f64, f64)>)>,
}

/// Draws `panels` side by side into a PNG, written through a temporary file and a rename.
pub fn write_panels(path: &Path, panels: &[Panel]) -> anyhow::Result<()> {
    let (pw, ph) = (520i64, 380i64);
    let mut img = RgbImage::from_pixel((pw * panels.len() as i64) as u32, ph as u32, BG);
    for (k, panel) in panels.iter().enumerate() {
        let ox = pw * k as i64;
        let (left, right, top, bottom) = (ox + 70, ox + pw - 40, 56i64, ph - 50);
        let pts: Vec<(f64, f64)> = panel.series.iter().flat_map(|s| s.1.clone()).collect();
        let fin = |v: &f64| v.is_finite();
        let xs: Vec<f64> = pts.iter().map(|p| p.0).filter(fin).collect();
        let ys: Vec<f64> = pts.iter().map(|p| p.1).filter(fin).collect();
        let (mut x0, mut x1) = bounds(&xs);
        let (mut y0, mut y1) = bounds(&ys);
        if x1 <= x0 {
            x0 -= 0.5;
            x1 += 0.5;
        }
        if y1 <= y0 {
            y0 -= 0.5;
            y1 += 0.5;
        }
        let pad = (y1 - y0) * 0.05;
        let (y0, y1) = (y0 - pad, y1 + pad);
        let px = |x: f64| left + ((x - x0) / (x1 - x0) * (right - left) as f64) as i64;
        let py = |y: f64| bottom - ((y - y0) / (y1 - y0) * (bottom - top) as f64) as i64;
        for t in 0..=4 {
            let yv = y0 + (y1 - y0) * t as f64 / 4.0;
            let y = py(yv);
            line(&mut img, (left, y), (right, y), GRID, 1);
            text(&mut img, ox + 4, y - 7, &label(yv), AXIS, 2);
            let xv = x0 + (x1 - x0) * t as f64 / 4.0;
            let x = px(xv);
            line(&mut img, (x, top), (x, bottom), GRID, 1);
            text(&mut img, x - 12, bottom + 8, &label(xv), AXIS, 2);
        }
        line(&mut img, (left, bottom), (right, bottom), AXIS, 1);
        line(&mut img, (left, top), (left, bottom), AXIS, 1);
        text(&mut img, ox + 10, 8, panel.title, AXIS, 2);
        text(
            &mut img,
            right - 12 * panel.x_label.len() as i64,
            ph - 20,
            panel.x_label,
            AXIS,
            2,
        );
        for (i, (name, s)) in panel.series.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            let s: Vec<&(f64, f64)> = s.iter().filter(|p| fin(&p.0) && fin(&p.1)).collect();
            for w in s.windows(2) {
                line(
                    &mut img,
                    (px(w[0].0), py(w[0].1)),
                    (px(w[1].0), py(w[1].1)),
                    c,
                    2,
                );
            }
            for p in &s {
                for d in -2..=2 {
                    line(
                        &mut img,
                        (px(p.0) - 2, py(p.1) + d),
                        (px(p.0) + 2, py(p.1) + d),
                        c,
                        1,
                    );
                }
            }
            let lx = ox + 10 + 165 * i as i64;
            line(&mut img, (lx, 36), (lx + 25, 36), c, 3);
            text(&mut img, lx + 32, 30, name, AXIS, 2);
        }
    }
    let tmp = path.with_extension("png.partial");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn bounds(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) }
}

/// `curves.png` of a training run: loss and accuracy per epoch, training and validation.
pub fn write_curves(path: &Path, rows: &[EpochMetrics]) -> anyhow::Result<()> {
    let e = |r: &EpochMetrics| r.epoch as f64;
    let pick = |f: &dyn Fn(&EpochMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| f(r).map(|v| (e(r), v)))
            .collect()
    };
    write_panels(
        path,
        &[
            Panel {
                title: "loss",
                x_label: "epoch",
                series: vec![
                    ("train", pick(&|r| Some(r.train_loss))),
                    ("val", pick(&|r| r.val_loss)),
                ],
            },
            Panel {
                title: "accuracy",
                x_label: "epoch",
                series: vec![
                    ("train", pick(&|r| Some(r.train_acc))),
                    ("val", pick(&|r| r.val_acc)),
                ],
            },
        ],
    )
}
