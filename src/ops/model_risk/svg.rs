//! Inline SVG charts (pure): lines over time with interval bands and a reference line,
//! horizontal bars with a threshold; and the HTML escaping the page shares.

use std::fmt::Write;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 36.0;

/// Colour-blind-safe palette (Okabe–Ito).
const COLOURS: [&str; 8] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"];

/// One line: a value and its interval at each x.
pub struct Line {
    pub name: String,
    /// (x, value, lower, upper).
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// A horizontal line marking a threshold.
pub struct Rule {
    pub value: f64,
    pub label: String,
}

/// Lines with their 95% bands over x in `[x_min, x_max]`, y in `[y_min, y_max]`; `x_label`
/// formats an x tick.
pub fn lines(
    title: &str,
    lines: &[Line],
    (x_min, x_max): (f64, f64),
    (y_min, y_max): (f64, f64),
    rule: Option<&Rule>,
    x_label: impl Fn(f64) -> String,
) -> String {
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let x = |value: f64| LEFT + (value - x_min) / (x_max - x_min).max(f64::MIN_POSITIVE) * plot_width;
    let y = |value: f64| TOP + (1.0 - (value.clamp(y_min, y_max) - y_min) / (y_max - y_min)) * plot_height;
    let mut svg = open(title);
    for tick in 0..=4 {
        let value = y_min + (y_max - y_min) * f64::from(tick) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{value:.2}</text>"##,
            LEFT + plot_width,
            LEFT - 6.0,
            y(value) + 4.0,
            y = y(value),
        );
    }
    for tick in 0..=3 {
        let value = x_min + (x_max - x_min) * f64::from(tick) / 3.0;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"#,
            x(value),
            HEIGHT - 12.0,
            escape(&x_label(value))
        );
    }
    if let Some(rule) = rule {
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#B00020" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#B00020">{}</text>"##,
            LEFT + plot_width,
            LEFT + plot_width + 6.0,
            y(rule.value) + 4.0,
            escape(&rule.label),
            y = y(rule.value),
        );
    }
    for (index, line) in lines.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let upper = line.points.iter().map(|(px, _, _, high)| format!("{:.1},{:.1}", x(*px), y(*high)));
        let lower = line.points.iter().rev().map(|(px, _, low, _)| format!("{:.1},{:.1}", x(*px), y(*low)));
        let band: Vec<String> = upper.chain(lower).collect();
        let path: Vec<String> =
            line.points.iter().map(|(px, value, _, _)| format!("{:.1},{:.1}", x(*px), y(*value))).collect();
        let _ = write!(
            svg,
            r#"<polygon points="{}" fill="{colour}" fill-opacity="0.15"/><polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            band.join(" "),
            path.join(" ")
        );
        for (px, value, _, _) in &line.points {
            let _ = write!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#, x(*px), y(*value));
        }
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{colour}"/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            LEFT + plot_width + 6.0,
            TOP + 24.0 + 16.0 * index as f64,
            LEFT + plot_width + 20.0,
            TOP + 33.0 + 16.0 * index as f64,
            escape(&line.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Horizontal bars of `(name, value)` from 0, with a threshold line.
pub fn bars(title: &str, bars: &[(String, f64)], rule: &Rule) -> String {
    let row = 18.0;
    let height = TOP + BOTTOM + row * bars.len() as f64;
    let left = 340.0;
    let plot_width = WIDTH - left - 60.0;
    let top = bars.iter().map(|(_, value)| *value).fold(rule.value * 1.25, f64::max).max(f64::MIN_POSITIVE);
    let x = |value: f64| left + value.max(0.0) / top * plot_width;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}"><title>{title}</title><text x="{left}" y="16" font-size="13" font-weight="bold">{title}</text>"#,
        title = escape(title)
    );
    for (index, (name, value)) in bars.iter().enumerate() {
        let y = TOP + row * index as f64;
        let colour = if *value > rule.value { "#D55E00" } else { "#0072B2" };
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{}</text><rect x="{left}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"/><text x="{:.1}" y="{:.1}" font-size="11">{value:.3}</text>"#,
            left - 6.0,
            y + 12.0,
            escape(name),
            y + 2.0,
            (x(*value) - left).max(0.5),
            row - 4.0,
            x(*value) + 4.0,
            y + 12.0,
        );
    }
    let _ = write!(
        svg,
        r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{:.1}" stroke="#B00020" stroke-dasharray="6 4"/><text x="{x:.1}" y="{:.1}" font-size="11" fill="#B00020" text-anchor="middle">{}</text></svg>"##,
        height - BOTTOM,
        height - 14.0,
        escape(&rule.label),
        x = x(rule.value),
    );
    svg
}

fn open(title: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}"><title>{title}</title><text x="{LEFT}" y="16" font-size="13" font-weight="bold">{title}</text>"#,
        title = escape(title)
    )
}

/// `text` safe in HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(character),
        }
    }
    out
}
