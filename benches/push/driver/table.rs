//! The table every part fills: a row per measurement with the medians over runs of tower-push
//! and of what it is set against, the median of their per-run ratios, and the target on it.

use crate::median;

/// One measured figure per run, for tower-push and its baseline.
#[derive(Default)]
struct Pair {
    ours: Vec<f64>,
    base: Vec<f64>,
}

/// A row of the table.
struct Row {
    name: String,
    unit: &'static str,
    pair: Pair,
    /// `Some((bound, higher_is_better))`: the target on the ratio ours/baseline.
    target: Option<(f64, bool)>,
}

pub(super) struct Table {
    /// What is measured: the first column's name.
    ours: &'static str,
    /// What it is set against: the second column's name.
    against: &'static str,
    rows: Vec<Row>,
    /// Why the other side was not measured, if it was not.
    pub(super) skipped: Option<String>,
}

impl Table {
    pub(super) fn new(against: &'static str) -> Self {
        Self {
            ours: "tower-push",
            against,
            rows: Vec::new(),
            skipped: None,
        }
    }

    /// The same table with `ours` in the first column, for a setup of tower-push other than
    /// its default.
    pub(super) fn of(mut self, ours: &'static str) -> Self {
        self.ours = ours;
        self
    }

    fn row(&mut self, name: &str, unit: &'static str, target: Option<(f64, bool)>) -> usize {
        if let Some(at) = self.rows.iter().position(|r| r.name == name) {
            return at;
        }
        self.rows.push(Row {
            name: name.to_owned(),
            unit,
            pair: Pair::default(),
            target,
        });
        self.rows.len() - 1
    }

    pub(super) fn add(
        &mut self,
        name: &str,
        unit: &'static str,
        target: Option<(f64, bool)>,
        ours: bool,
        value: f64,
    ) {
        let at = self.row(name, unit, target);
        let pair = &mut self.rows[at].pair;
        if ours {
            pair.ours.push(value);
        } else {
            pair.base.push(value);
        }
    }

    pub(super) fn print(&self, runs: usize) {
        println!();
        let (ours, against) = (self.ours, self.against);
        println!(
            "Medians of {runs} runs; ratio: the median over runs of {ours} / {against} \
             measured in the same run."
        );
        println!();
        println!("| measurement | unit | {ours} | {against} | ratio | target | met |");
        println!("| --- | --- | ---: | ---: | ---: | --- | --- |");
        if let Some(reason) = &self.skipped {
            println!("| {against} peer | skipped: {reason} | | | | | |");
        }
        for row in &self.rows {
            let (ours, base) = (median(&row.pair.ours), median(&row.pair.base));
            let ratios: Vec<f64> = (row.pair.ours.iter().zip(&row.pair.base))
                .map(|(ours, base)| ours / base)
                .collect();
            let ratio = median(&ratios);
            let (target, met) = match row.target {
                Some((bound, true)) => (format!(">= {bound:.2}x"), ratio >= bound),
                Some((bound, false)) => (format!("<= {bound:.2}x"), ratio <= bound),
                None => (String::new(), true),
            };
            let met = match row.target {
                None => "",
                Some(_) if met => "yes",
                Some(_) => "**no**",
            };
            println!(
                "| {} | {} | {} | {} | {ratio:.2}x | {target} | {met} |",
                row.name,
                row.unit,
                figure(ours),
                figure(base),
            );
        }
    }
}

pub(super) fn figure(value: f64) -> String {
    if value >= 1000.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}
