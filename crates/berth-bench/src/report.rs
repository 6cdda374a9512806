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
    let mut lines: Vec<[String; 7]> = Vec::new();
    for r in rows {
        let reference = match (&r.reference, r.reference_what.is_empty()) {
            (Cell::None, _) => "–".to_owned(),
            (c, true) => c.show(),
            (c, false) => format!("{} ({})", c.show(), r.reference_what),
        };
        let target = match r.met {
            Some(true) => format!("{} (met)", r.target),
            Some(false) => format!("{} (MISSED)", r.target),
            None => r.target.clone(),
        };
        lines.push([
            r.label.clone(),
            r.berth.show(),
            r.dist.show(),
            reference,
            fmt_ratio(r.ratio_dist()),
            fmt_ratio(r.ratio_ref()),
            if target.is_empty() {
                "–".into()
            } else {
                target
            },
        ]);
    }
    let mut width = header.map(|h| h.chars().count());
    for l in &lines {
        for (w, c) in width.iter_mut().zip(l) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let row = |out: &mut String, cells: &[String]| {
        out.push('|');
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i] - c.chars().count();
            if i == 0 || i == 6 || i == 3 {
                let _ = write!(out, " {c}{} |", " ".repeat(pad));
            } else {
                let _ = write!(out, " {}{c} |", " ".repeat(pad));
            }
        }
        out.push('\n');
    };
    row(&mut out, &header.map(str::to_owned));
    out.push('|');
    for (i, w) in width.iter().enumerate() {
        let dashes = "-".repeat(*w);
        if i == 0 || i == 6 || i == 3 {
            let _ = write!(out, " {dashes} |");
        } else {
            let _ = write!(out, " {}:|", &dashes[..dashes.len()]);
        }
    }
    out.push('\n');
    let mut section = "";
    for (r, l) in rows.iter().zip(&lines) {
        if r.section != section {
            section = r.section;
            let mut cells: Vec<String> = vec![format!("**{section}**")];
            cells.extend(std::iter::repeat_n(String::new(), 6));
            let mut sec = String::new();
            sec.push('|');
            for (i, c) in cells.iter().enumerate() {
                let pad = width[i].saturating_sub(c.chars().count());
                let _ = write!(sec, " {c}{} |", " ".repeat(pad));
            }
            sec.push('\n');
            out.push_str(&sec);
        }
        row(&mut out, l);
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
