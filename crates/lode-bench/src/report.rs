//! Result tables: markdown for people, JSON for machines, with ratios against the first target.

use serde_json::{Map, Value, json};

/// One target's results in one scenario.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) target: String,
    pub(crate) metrics: Vec<(&'static str, Option<f64>)>,
    pub(crate) notes: Vec<String>,
    pub(crate) error: Option<String>,
}

impl Row {
    pub(crate) fn new(target: &str) -> Row {
        Row {
            target: target.to_owned(),
            metrics: Vec::new(),
            notes: Vec::new(),
            error: None,
        }
    }

    pub(crate) fn failed(target: &str, error: String) -> Row {
        Row {
            error: Some(error),
            ..Row::new(target)
        }
    }

    pub(crate) fn set(&mut self, name: &'static str, v: impl Into<Option<f64>>) {
        self.metrics.push((name, v.into()));
    }

    pub(crate) fn get(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| *v)
    }
}

/// One scenario run against every target.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) scenario: String,
    pub(crate) params: String,
    /// The metric the ratio column compares.
    pub(crate) primary: &'static str,
    pub(crate) rows: Vec<Row>,
}

pub(crate) fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "n/a".to_owned(),
        Some(v) if !v.is_finite() => "n/a".to_owned(),
        Some(v) if v == v.trunc() && v.abs() < 1e15 => group(v as i64),
        Some(v) if v.abs() >= 1000.0 => group(v.round() as i64),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

fn group(v: i64) -> String {
    let s = v.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0 { format!("-{out}") } else { out }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

impl Report {
    fn columns(&self) -> Vec<&'static str> {
        let mut cols: Vec<&'static str> = Vec::new();
        for r in &self.rows {
            for (n, _) in &r.metrics {
                if !cols.contains(n) {
                    cols.push(n);
                }
            }
        }
        cols
    }

    pub(crate) fn to_markdown(&self) -> String {
        let cols = self.columns();
        let mut s = format!("### {} ({})\n\n", self.scenario, self.params);
        let multi = self.rows.len() > 1;
        s.push_str("| target |");
        for c in &cols {
            s.push_str(&format!(" {c} |"));
        }
        if multi {
            s.push_str(&format!(" ratio {} |", self.primary));
        }
        s.push_str("\n|---|");
        for _ in &cols {
            s.push_str("---:|");
        }
        if multi {
            s.push_str("---:|");
        }
        s.push('\n');
        let first = self.rows.first();
        for r in &self.rows {
            s.push_str(&format!("| {} |", r.target));
            if let Some(e) = &r.error {
                s.push_str(&format!(" FAILED: {} |", e.replace('|', "/")));
                s.push('\n');
                continue;
            }
            for c in &cols {
                s.push_str(&format!(" {} |", fmt_num(r.get(c))));
            }
            if multi {
                let v = ratio(r.get(self.primary), first.and_then(|f| f.get(self.primary)));
                s.push_str(&format!(
                    " {} |",
                    v.map_or("n/a".to_owned(), |v| format!("{v:.2}"))
                ));
            }
            s.push('\n');
        }
        if let Some(first) = first.filter(|f| f.error.is_none()) {
            for r in self.rows.iter().skip(1).filter(|r| r.error.is_none()) {
                s.push_str(&format!("| *{}/{}* |", r.target, first.target));
                for c in &cols {
                    let v = ratio(r.get(c), first.get(c));
                    s.push_str(&format!(
                        " {} |",
                        v.map_or("n/a".to_owned(), |v| format!("{v:.2}"))
                    ));
                }
                if multi {
                    s.push_str(" |");
                }
                s.push('\n');
            }
        }
        for r in &self.rows {
            for n in &r.notes {
                s.push_str(&format!("\n- {}: {}", r.target, n));
            }
        }
        s.push('\n');
        s
    }

    pub(crate) fn to_json(&self) -> Value {
        let first = self.rows.first();
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let mut m = Map::new();
                for (n, v) in &r.metrics {
                    m.insert((*n).to_owned(), v.filter(|v| v.is_finite()).map_or(Value::Null, |v| json!(v)));
                }
                json!({
                    "target": r.target,
                    "metrics": m,
                    "ratio_vs_first": ratio(r.get(self.primary), first.and_then(|f| f.get(self.primary))),
                    "notes": r.notes,
                    "error": r.error,
                })
            })
            .collect();
        json!({
            "scenario": self.scenario,
            "params": self.params,
            "primary": self.primary,
            "rows": rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_ratios() {
        assert_eq!(fmt_num(Some(1234567.0)), "1,234,567");
        assert_eq!(fmt_num(Some(0.5)), "0.500");
        assert_eq!(fmt_num(None), "n/a");
        let mut a = Row::new("a");
        a.set("msgs/s", Some(100.0));
        let mut b = Row::new("b");
        b.set("msgs/s", Some(50.0));
        let r = Report {
            scenario: "x".into(),
            params: "p".into(),
            primary: "msgs/s",
            rows: vec![a, b],
        };
        let md = r.to_markdown();
        assert!(md.contains("| b | 50 | 0.50 |"), "{md}");
        assert_eq!(r.to_json()["rows"][1]["ratio_vs_first"], json!(0.5));
    }
}
