//! Charts for researchers: PNG files drawn with plotters (the font is compiled in, so no system
//! font is needed) and plain-text summaries for the terminal.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::{pb, ClientError};

const FONT: &str = "sans-serif";
static REGISTER_FONT: Once = Once::new();

fn register_font() {
    REGISTER_FONT.call_once(|| {
        // The bundled font is a valid TrueType file; failure here would be a build mistake.
        plotters::style::register_font(FONT, FontStyle::Normal, include_bytes!("../assets/DejaVuSans.ttf"))
            .map_err(|_| ())
            .expect("the bundled font parses");
    });
}

/// The lower edge of bin `i`.
fn edge(h: &pb::DistanceHistogram, i: usize) -> f64 {
    let width = (h.max_distance - h.min_distance) as f64 / h.counts.len().max(1) as f64;
    h.min_distance as f64 + i as f64 * width
}

/// Draws the distance histogram as a PNG of `width`×`height` pixels, with the mark (if any) as a
/// vertical line and its coverage in the caption.
pub fn histogram_png(h: &pb::DistanceHistogram, path: &Path, size: (u32, u32)) -> Result<(), ClientError> {
    if h.total_pairs == 0 || h.counts.is_empty() {
        return Err(ClientError::NothingToPlot("the histogram has no pairs"));
    }
    register_font();
    let fail =
        |e: &dyn std::fmt::Display| ClientError::Plot { path: path.display().to_string(), message: e.to_string() };
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let top = *h.counts.iter().max().unwrap_or(&1) as f64 * 1.08;
    let (lo, hi) = (edge(h, 0), edge(h, h.counts.len()));
    let mut caption = format!("{} pair distances under {}", h.total_pairs, h.model_id);
    if h.mark_distance > 0.0 {
        caption.push_str(&format!(
            "; {} pairs ({:.3}%) at <= {:.3}",
            h.pairs_within_mark,
            100.0 * h.pairs_within_mark as f64 / h.total_pairs as f64,
            h.mark_distance
        ));
    }
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(lo..hi.max(lo + 1e-6), 0.0..top.max(1.0))
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("Euclidean distance")
        .y_desc("pairs")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(h.counts.iter().enumerate().map(|(i, &c)| {
            Rectangle::new([(edge(h, i), 0.0), (edge(h, i + 1), c as f64)], RGBColor(70, 110, 180).filled())
        }))
        .map_err(|e| fail(&e))?;
    if h.mark_distance > 0.0 {
        let x = h.mark_distance as f64;
        chart
            .draw_series(std::iter::once(PathElement::new(vec![(x, 0.0), (x, top)], RED.stroke_width(2))))
            .map_err(|e| fail(&e))?
            .label(format!("threshold {:.3}", h.mark_distance))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

/// A terminal rendering: one line per group of bins with a bar, the cumulative share, and the
/// mark's line.
pub fn histogram_text(h: &pb::DistanceHistogram, rows: usize) -> String {
    let mut out = format!(
        "model {}: {} pairs, distances {:.4} .. {:.4}\n",
        h.model_id, h.total_pairs, h.min_distance, h.max_distance
    );
    if h.total_pairs == 0 || h.counts.is_empty() {
        return out;
    }
    let per_row = h.counts.len().div_ceil(rows.max(1));
    let groups: Vec<(usize, u64)> =
        h.counts.chunks(per_row).enumerate().map(|(g, c)| (g * per_row, c.iter().sum())).collect();
    let top = groups.iter().map(|g| g.1).max().unwrap_or(1).max(1);
    let mut cumulative = 0u64;
    let mut marked = false;
    for (first, count) in groups {
        let last = (first + per_row).min(h.counts.len());
        let (from, to) = (edge(h, first), edge(h, last));
        if h.mark_distance > 0.0 && !marked && (h.mark_distance as f64) < to {
            out.push_str(&format!(
                "---- threshold {:.4}: {} pairs ({:.3}%) at or below ----\n",
                h.mark_distance,
                h.pairs_within_mark,
                100.0 * h.pairs_within_mark as f64 / h.total_pairs as f64
            ));
            marked = true;
        }
        cumulative += count;
        let bar = "#".repeat(((count as f64 / top as f64) * 40.0).round() as usize);
        out.push_str(&format!(
            "{from:>8.4} - {to:<8.4} {count:>11} {:>7.3}%  {bar}\n",
            100.0 * cumulative as f64 / h.total_pairs as f64
        ));
    }
    out
}

/// One named line of a line chart.
pub struct Line<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
}

/// Colours of successive lines.
pub const LINE_COLORS: [RGBColor; 4] =
    [RGBColor(70, 110, 180), RGBColor(220, 110, 30), RGBColor(60, 150, 70), RGBColor(150, 60, 160)];

/// Draws lines on shared axes with a legend, e.g. ROC curves (with the diagonal of chance when
/// `diagonal`) or loss curves per epoch.
pub fn lines_png(
    title: &str,
    axes: (&str, &str),
    lines: &[Line],
    diagonal: bool,
    path: &Path,
    size: (u32, u32),
) -> Result<(), ClientError> {
    if lines.iter().all(|l| l.points.is_empty()) {
        return Err(ClientError::NothingToPlot("no points to draw"));
    }
    register_font();
    let fail =
        |e: &dyn std::fmt::Display| ClientError::Plot { path: path.display().to_string(), message: e.to_string() };
    let all = lines.iter().flat_map(|l| l.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if diagonal {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1.max(x0 + 1e-6), (y0 - if diagonal { 0.0 } else { pad })..(y1 + pad))
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc(axes.0)
        .y_desc(axes.1)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(|e| fail(&e))?;
    if diagonal {
        chart
            .draw_series(std::iter::once(PathElement::new(vec![(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3))))
            .map_err(|e| fail(&e))?;
    }
    for line in lines {
        let color = line.color;
        chart
            .draw_series(std::iter::once(PathElement::new(line.points.clone(), color.stroke_width(2))))
            .map_err(|e| fail(&e))?
            .label(line.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(if diagonal { SeriesLabelPosition::LowerRight } else { SeriesLabelPosition::UpperRight })
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> pb::DistanceHistogram {
        pb::DistanceHistogram {
            model_id: "descriptor/v1".into(),
            min_distance: 0.2,
            max_distance: 1.2,
            counts: vec![1, 4, 10, 30, 20, 10, 5, 2, 1, 1],
            total_pairs: 84,
            mark_distance: 0.45,
            pairs_within_mark: 5,
        }
    }

    #[test]
    fn draws_a_png_of_the_requested_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.png");
        histogram_png(&sample(), &path, (640, 400)).unwrap();
        let png = image::open(&path).unwrap();
        assert_eq!((png.width(), png.height()), (640, 400));
        // Bars are drawn in the bar colour; the picture is not blank.
        let rgb = png.to_rgb8();
        assert!(rgb.pixels().any(|p| p.0 == [70, 110, 180]));
        assert!(rgb.pixels().any(|p| p.0[0] > 200 && p.0[1] < 60 && p.0[2] < 60), "the mark line is red");
        let empty = pb::DistanceHistogram { total_pairs: 0, ..sample() };
        assert!(matches!(histogram_png(&empty, &path, (640, 400)), Err(ClientError::NothingToPlot(_))));
    }

    #[test]
    fn line_charts_draw_each_line_in_its_colour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roc.png");
        let lines = [
            Line { name: "model", points: vec![(0.0, 0.0), (0.1, 0.7), (1.0, 1.0)], color: LINE_COLORS[0] },
            Line { name: "descriptor", points: vec![(0.0, 0.0), (0.3, 0.6), (1.0, 1.0)], color: LINE_COLORS[1] },
        ];
        lines_png("ROC", ("false positive rate", "true positive rate"), &lines, true, &path, (500, 400)).unwrap();
        let rgb = image::open(&path).unwrap().to_rgb8();
        assert_eq!(rgb.dimensions(), (500, 400));
        for color in &LINE_COLORS[..2] {
            assert!(rgb.pixels().filter(|p| p.0 == [color.0, color.1, color.2]).count() > 50);
        }
        let empty = [Line { name: "none", points: vec![], color: LINE_COLORS[0] }];
        assert!(matches!(
            lines_png("x", ("a", "b"), &empty, false, &path, (100, 100)),
            Err(ClientError::NothingToPlot(_))
        ));
    }

    #[test]
    fn text_summary_accumulates_and_marks_the_threshold() {
        let text = histogram_text(&sample(), 10);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("84 pairs"));
        let mark = lines.iter().position(|l| l.contains("threshold 0.4500: 5 pairs")).unwrap();
        // The mark line sits before the bin that holds 0.45 (0.4 .. 0.5), after the 0.3 .. 0.4 bin.
        assert!(lines[mark - 1].trim_start().starts_with("0.3000"), "{text}");
        assert!(lines.last().unwrap().contains("100.000%"));
    }
}
