//! What was measured, and the table and JSON file made from it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::stats::{max, median};

/// Who a figure belongs to.
pub const BERTH: &str = "berth";
pub const DIST: &str = "distribution";
pub const NGINX: &str = "nginx";
pub const MACHINE: &str = "machine";

/// Every figure of every run: metric id -> who -> values (one per run).
#[derive(Default)]
pub struct Metrics {
    pub values: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    /// Failures: who -> scenario -> (count, a few messages).
    pub errors: BTreeMap<String, BTreeMap<String, (u64, Vec<String>)>>,
    pub notes: Vec<String>,
}

impl Metrics {
    pub fn add(&mut self, id: &str, who: &str, v: f64) {
        if v.is_finite() {
            self.values
                .entry(id.to_owned())
                .or_default()
                .entry(who.to_owned())
                .or_default()
                .push(v);
        }
    }

    pub fn add_opt(&mut self, id: &str, who: &str, v: Option<f64>) {
        if let Some(v) = v {
            self.add(id, who, v);
        }
    }

    pub fn error(&mut self, who: &str, scenario: &str, count: u64, samples: &[String]) {
        if count == 0 {
            return;
        }
        let e = self
            .errors
            .entry(who.to_owned())
            .or_default()
            .entry(scenario.to_owned())
            .or_default();
        e.0 += count;
        for s in samples {
            if e.1.len() < 5 {
                e.1.push(s.clone());
            }
        }
    }

    pub fn note(&mut self, s: impl Into<String>) {
        let s = s.into();
        if !self.notes.contains(&s) {
            self.notes.push(s);
        }
    }

    fn runs(&self, id: &str, who: &str) -> &[f64] {
        self.values
            .get(id)
            .and_then(|m| m.get(who))
            .map_or(&[], Vec::as_slice)
    }

    pub fn median(&self, id: &str, who: &str) -> Option<f64> {
        median(self.runs(id, who))
    }

    pub fn max(&self, id: &str, who: &str) -> Option<f64> {
        max(self.runs(id, who))
    }
}

/// A cell of the table: a figure, or a text saying why there is none.
#[derive(Clone)]
pub enum Cell {
    V(f64),
    Text(String),
    None,
}

impl Cell {
    fn value(&self) -> Option<f64> {
        match self {
            Cell::V(v) => Some(*v),
            _ => None,
        }
    }

    fn show(&self) -> String {
        match self {
            Cell::V(v) => fmt(*v),
            Cell::Text(t) => t.clone(),
            Cell::None => "–".into(),
        }
    }

    fn json(&self) -> Value {
        match self {
            Cell::V(v) => json!(v),
            Cell::Text(t) => json!(t),
            Cell::None => Value::Null,
        }
    }
}

impl From<Option<f64>> for Cell {
    fn from(v: Option<f64>) -> Self {
        v.map_or(Cell::None, Cell::V)
    }
}

pub struct Row {
    pub section: &'static str,
    pub id: String,
    pub label: String,
    pub berth: Cell,
    pub dist: Cell,
    /// The reference figure and what it is.
    pub reference: Cell,
    pub reference_what: String,
    pub target: String,
    /// Whether the target is met, when it can be judged from this row (informational only:
    /// the tool never fails on it).
    pub met: Option<bool>,
}

impl Row {
    pub fn ratio_dist(&self) -> Option<f64> {
        ratio(self.berth.value(), self.dist.value())
    }

    pub fn ratio_ref(&self) -> Option<f64> {
        ratio(self.berth.value(), self.reference.value())
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

pub fn fmt(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{}×", fmt(r)))
}

/// The table, as printed on stdout.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "measurement",
        "berth",
        "distribution",
        "nginx/machine reference",
        "berth/distribution",
        "berth/reference",
        "target",
    ];
    let mut lines = Vec::new();
    let mut section = "";
    for r in rows {
        if r.section != section {
            section = r.section;
            lines.push(Line::Section(section.to_owned()));
        }
        let reference = match (&r.reference, r.reference_what.is_empty()) {
            (Cell::None, _) => "–".to_owned(),
            (c, true) => c.show(),
            (c, false) => format!("{} ({})", c.show(), r.reference_what),
        };
        lines.push(Line::Cells(vec![
            r.label.clone(),
            r.berth.show(),
            r.dist.show(),
            reference,
            fmt_ratio(r.ratio_dist()),
            fmt_ratio(r.ratio_ref()),
            target_text(&r.target, r.met),
        ]));
    }
    markdown(
        &header,
        &[true, false, false, true, false, false, true],
        &lines,
    )
}

/// A target with whether it was met, when judged; "–" for none.
pub fn target_text(target: &str, met: Option<bool>) -> String {
    match met {
        Some(true) => format!("{target} (met)"),
        Some(false) => format!("{target} (MISSED)"),
        None if target.is_empty() => "–".into(),
        None => target.to_owned(),
    }
}

/// A line of a [`markdown`] table: a section title, or one cell per column.
pub enum Line {
    Section(String),
    Cells(Vec<String>),
}

/// A Markdown table padded to its columns' widths, so that it reads as plain text too. Columns
/// whose `left` is true (text) are aligned left, the others (figures) right. A section title
/// is a bold first cell on a line of its own.
pub fn markdown(header: &[&str], left: &[bool], lines: &[Line]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for l in lines {
        if let Line::Cells(cells) = l {
            for (w, c) in width.iter_mut().zip(cells) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let row = |out: &mut String, cells: &[String], all_left: bool| {
        out.push('|');
        for (i, c) in cells.iter().enumerate() {
            let pad = " ".repeat(width[i].saturating_sub(c.chars().count()));
            if all_left || left[i] {
                let _ = write!(out, " {c}{pad} |");
            } else {
                let _ = write!(out, " {pad}{c} |");
            }
        }
        out.push('\n');
    };
    row(
        &mut out,
        &header.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        false,
    );
    out.push('|');
    for (i, w) in width.iter().enumerate() {
        let dashes = "-".repeat(*w);
        if left[i] {
            let _ = write!(out, " {dashes} |");
        } else {
            let _ = write!(out, " {dashes}:|");
        }
    }
    out.push('\n');
    for l in lines {
        match l {
            Line::Section(title) => {
                let mut cells = vec![format!("**{title}**")];
                cells.extend(std::iter::repeat_n(String::new(), width.len() - 1));
                row(&mut out, &cells, true);
            }
            Line::Cells(cells) => row(&mut out, cells, false),
        }
    }
    out
}

pub fn rows_json(rows: &[Row]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "section": r.section,
                    "id": r.id,
                    "measurement": r.label,
                    "berth": r.berth.json(),
                    "distribution": r.dist.json(),
                    "reference": r.reference.json(),
                    "reference_is": r.reference_what,
                    "berth_over_distribution": r.ratio_dist(),
                    "berth_over_reference": r.ratio_ref(),
                    "target": r.target,
                    "target_met": r.met,
                })
            })
            .collect(),
    )
}

pub fn errors_text(m: &Metrics) -> String {
    let mut out = String::new();
    for (who, scenarios) in &m.errors {
        for (scenario, (count, samples)) in scenarios {
            let _ = writeln!(out, "{who}: {scenario}: {count} failed operation(s)");
            for s in samples {
                let _ = writeln!(out, "    {}", s.replace('\n', "\n    "));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_text_left_and_figures_right() {
        let lines = [
            Line::Section("s".into()),
            Line::Cells(vec!["a long label".into(), "1.00".into(), "x".into()]),
            Line::Cells(vec!["b".into(), "100".into(), "–".into()]),
        ];
        let t = markdown(&["what", "figure", "note"], &[true, false, true], &lines);
        assert_eq!(
            t,
            "| what         | figure | note |\n\
             | ------------ | ------:| ---- |\n\
             | **s**        |        |      |\n\
             | a long label |   1.00 | x    |\n\
             | b            |    100 | –    |\n"
        );
        assert_eq!(target_text("", None), "–");
        assert_eq!(target_text("≥ 1", Some(false)), "≥ 1 (MISSED)");
    }
}
