//! `ringlb-bench plot`: latency against percentile, HdrHistogram style — the x
//! axis is 1/(1-p) on a log scale labelled 50%, 90%, 99%, 99.9%, … — with one
//! labelled curve per JSON report, as SVG or PNG.

use std::ops::Range;
use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, KeyPointWeight, Ranged};
use plotters::coord::Shift;
use plotters::prelude::*;
use thiserror::Error;

use crate::report::Report;

/// A plot that could not be drawn.
#[derive(Debug, Error)]
pub enum PlotError {
    #[error("nothing to plot: {0}")]
    Empty(String),
    #[error("drawing failed: {0}")]
    Draw(String),
    #[error("PNG output needs a TrueType font; none found in {0:?} (install fonts-dejavu-core or use --format svg)")]
    NoFont(Vec<&'static str>),
    #[error("unknown format {0:?}: expected svg or png")]
    Format(String),
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Svg,
    Png,
}

impl Format {
    /// Parses `svg` or `png`.
    pub fn parse(s: &str) -> Result<Format, PlotError> {
        match s.to_ascii_lowercase().as_str() {
            "svg" => Ok(Format::Svg),
            "png" => Ok(Format::Png),
            _ => Err(PlotError::Format(s.to_string())),
        }
    }

    /// The format implied by a file name (SVG unless it ends in `.png`).
    pub fn from_path(p: &Path) -> Format {
        match p.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("png") => Format::Png,
            _ => Format::Svg,
        }
    }
}

/// What to draw and where.
#[derive(Debug, Clone)]
pub struct PlotOptions {
    pub output: PathBuf,
    pub format: Format,
    pub title: String,
    /// Also draw each run's uncorrected latency (dashed).
    pub uncorrected: bool,
    pub size: (u32, u32),
}

/// One curve: label and (x = log10(1/(1-p)), latency in ms) points.
#[derive(Debug, Clone)]
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

/// x position of percentile `p` (a fraction below 1).
pub fn x_of(p: f64) -> f64 {
    (1.0 / (1.0 - p)).log10()
}

/// Axis label for x position `x` (0 → "0%", 1 → "90%", 3 → "99.9%").
pub fn label_of(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let s = format!("{:.6}", p);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// The curves of a report (corrected, and uncorrected if asked and different).
pub fn curves_of(r: &Report, uncorrected: bool) -> Vec<Curve> {
    let pts = |h: &crate::report::HistSummary| -> Vec<(f64, f64)> {
        h.spectrum
            .iter()
            .filter(|p| p.percentile < 1.0)
            .map(|p| (x_of(p.percentile), p.value_us as f64 / 1000.0))
            .collect()
    };
    let mut v = vec![Curve {
        label: r.label.clone(),
        points: pts(&r.latency),
        dashed: false,
    }];
    if uncorrected && r.model == "open" {
        v.push(Curve {
            label: format!("{} (uncorrected)", r.label),
            points: pts(&r.latency_uncorrected),
            dashed: true,
        });
    }
    v
}

/// The x axis: linear in log10(1/(1-p)), ticks at 0%, 50%, 90%, 99%, ….
#[derive(Debug, Clone)]
struct PercentileAxis {
    max: f64,
}

impl Ranged for PercentileAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v / self.max).clamp(0.0, 1.0);
        limit.0 + (f * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if matches!(hint.weight(), KeyPointWeight::Any) && hint.max_num_points() == 0 {
            return Vec::new();
        }
        let mut v = vec![0.0, 2f64.log10()];
        let mut k = 1.0;
        while k <= self.max + 1e-9 {
            v.push(k);
            k += 1.0;
        }
        v
    }

    fn range(&self) -> Range<f64> {
        0.0..self.max
    }
}

const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn ensure_font() -> Result<(), PlotError> {
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *LOADED.get_or_init(|| {
        for p in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError::NoFont(FONT_PATHS.to_vec()))
    }
}

/// Draws `curves` to the file named in `opts`.
pub fn plot(curves: &[Curve], opts: &PlotOptions) -> Result<(), PlotError> {
    if curves.iter().all(|c| c.points.is_empty()) {
        return Err(PlotError::Empty("no latency samples in any input".into()));
    }
    ensure_font()?;
    match opts.format {
        Format::Svg => {
            let root = SVGBackend::new(&opts.output, opts.size).into_drawing_area();
            draw(root, curves, opts)
        }
        Format::Png => {
            let root = BitMapBackend::new(&opts.output, opts.size).into_drawing_area();
            draw(root, curves, opts)
        }
    }
}

fn err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Draw(e.to_string())
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    curves: &[Curve],
    opts: &PlotOptions,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let max_x = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .fold(2.0f64, f64::max)
        .ceil();
    let max_y = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let max_y = if max_y > 0.0 { max_y * 1.1 } else { 1.0 };
    let mut chart = ChartBuilder::on(&root)
        .caption(&opts.title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(PercentileAxis { max: max_x }, 0.0..max_y)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("Percentile")
        .y_desc("Latency (ms)")
        .x_label_formatter(&|x| label_of(*x))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    let mut color_index = 0;
    for c in curves {
        if !c.dashed {
            color_index += 1;
        }
        let color = COLORS[(color_index - 1) % COLORS.len()];
        let style = color.stroke_width(2);
        if c.dashed {
            chart
                .draw_series(DashedLineSeries::new(c.points.iter().copied(), 6, 4, style))
                .map_err(err)?
                .label(c.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(1))
                });
        } else {
            chart
                .draw_series(LineSeries::new(c.points.iter().copied(), style))
                .map_err(err)?
                .label(c.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels() {
        assert_eq!(label_of(0.0), "0%");
        assert_eq!(label_of(2f64.log10()), "50%");
        assert_eq!(label_of(1.0), "90%");
        assert_eq!(label_of(3.0), "99.9%");
        assert_eq!(label_of(5.0), "99.999%");
        assert!((x_of(0.99) - 2.0).abs() < 1e-9);
    }
}
