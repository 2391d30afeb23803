//! The monitoring files the repository ships in `deploy/monitoring/`: the Prometheus alerting
//! rules, their unit tests and the Grafana dashboard.
//!
//! With `promtool` (Debian package `prometheus`): the rules load (`promtool check rules`), every
//! alert fires and stays quiet as its unit tests say (`promtool test rules`), every query of the
//! dashboard parses, and a scrape of the demo's routes, served in-process with the demo's
//! exporter, passes `promtool check metrics`. Without it these are reported as ignored, and
//! under `CI=true` as failed. Without any program: every metric the rules and the dashboard name
//! is one the crate records (`tower_push::metrics::NAMES`), the dashboard shows every one of
//! them, and every alert has a test case where it fires and one where it does not.

use crate::{app, common};

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use app::{Demo, Settings};
use common::external::Program;
use common::{get, parked, SECOND};
use tower_push::metrics::{HISTOGRAMS, NAMES};
use tower_push::Shutdown;

pub(crate) const PROMTOOL: Program = Program::new("promtool", "prometheus");

const RULES: &str = "tower-push-rules.yml";
const RULE_TESTS: &str = "tower-push-rules.test.yml";
const DASHBOARD: &str = "tower-push-dashboard.json";

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring")
}

fn read(file: &str) -> String {
    let path = monitoring().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `promtool` with `args` in `deploy/monitoring/`, feeding it `stdin`, and asserts that it
/// succeeded; returns its output.
fn promtool(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(PROMTOOL.path())
        .args(args)
        .current_dir(monitoring())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool {args:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub(crate) fn the_rules_load() {
    promtool(&["check", "rules", RULES], b"");
}

pub(crate) fn every_alert_fires_and_stays_quiet_as_its_tests_say() {
    promtool(&["test", "rules", RULE_TESTS], b"");
}

/// Each query of the dashboard as the expression of a recording rule, with Grafana's variables
/// replaced by what they stand for (every job and instance, a 5-minute rate window):
/// `promtool check rules` parses them all.
pub(crate) fn every_query_of_the_dashboard_parses() {
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, query) in dashboard_queries().iter().enumerate() {
        let query = query
            .replace("$__rate_interval", "5m")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        let query = serde_json::to_string(&query).unwrap();
        rules += &format!("      - record: dashboard:query_{n}\n        expr: {query}\n");
    }
    let path = dir.path().join("dashboard-queries.yml");
    std::fs::write(&path, rules).unwrap();
    promtool(&["check", "rules", path.to_str().unwrap()], b"");
}

/// The demo's routes with the demo's exporter (histograms with the crate's buckets), after a
/// poll answered with an event and a refused cursor: what `/metrics` serves passes promtool's
/// linter, and every `tower_push_` family in it is one of `tower_push::metrics::NAMES`.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_scrape_of_the_demo_passes_promtool_check_metrics() {
    app::metrics::install();
    let settings = Settings {
        hold: 60 * SECOND,
        max_held: 8,
        ..Settings::default()
    };
    let demo = Demo::new(&settings, &Shutdown::new()).unwrap();
    let topic = demo.topic().clone();
    let addr = common::serve_program(demo).await;
    let path = format!("/poll?after={}", topic.head());
    let poll = tokio::spawn(async move { get(addr, &path).await });
    parked(&topic, 1).await;
    topic.publish(common::data(1));
    assert_eq!(poll.await.unwrap().status, 200);
    assert_eq!(get(addr, "/poll?after=nonsense").await.status, 400);

    let scrape = get(addr, "/metrics").await;
    assert_eq!(scrape.status, 200);
    let text = String::from_utf8(scrape.body.to_vec()).unwrap();
    assert!(
        text.contains("tower_push_publish_to_write_seconds_bucket{"),
        "histograms, not summaries: {text}"
    );
    let output = promtool(&["check", "metrics"], text.as_bytes());
    let lint = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    assert!(lint.trim().is_empty(), "promtool check metrics: {lint}");
    let families = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with("tower_push_"));
    for family in families {
        assert!(NAMES.contains(&family), "{family} is not in NAMES");
    }
}

pub(crate) fn the_rules_and_the_dashboard_name_only_metrics_the_crate_records() {
    let rules = rule_expressions();
    assert_eq!(rules.len(), alerts().len(), "one expression per alert");
    let queries = dashboard_queries();
    let mut shown = Vec::new();
    for (source, expr) in rules
        .iter()
        .map(|e| (RULES, e))
        .chain(queries.iter().map(|e| (DASHBOARD, e)))
    {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{source}: no metric in {expr}");
        for name in names {
            let histogram = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| HISTOGRAMS.contains(base));
            let recorded = histogram.unwrap_or(&name);
            assert!(
                NAMES.contains(&recorded),
                "{source}: `{name}` is not a metric the crate records, in {expr}"
            );
            if source == DASHBOARD {
                shown.push(recorded.to_owned());
            }
        }
    }
    for name in NAMES {
        assert!(
            shown.iter().any(|shown| shown == name),
            "the dashboard does not show {name}"
        );
    }
}

pub(crate) fn every_alert_has_a_test_that_fires_it_and_one_that_does_not() {
    let tests = read(RULE_TESTS);
    // (alert, fires) for each `alert_rule_test` entry.
    let mut cases = Vec::new();
    let mut alert = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            alert = Some(name.trim().to_owned());
        } else if let Some(expected) = line.strip_prefix("exp_alerts:") {
            let alert = alert.take().expect("alertname before exp_alerts");
            cases.push((alert, expected.trim() != "[]"));
        }
    }
    let alerts = alerts();
    assert!(alerts.len() >= 7, "{alerts:?}");
    for alert in &alerts {
        for fires in [true, false] {
            assert!(
                cases.contains(&(alert.clone(), fires)),
                "{alert}: no test case where it {}",
                if fires { "fires" } else { "stays quiet" }
            );
        }
    }
    for (alert, _) in &cases {
        assert!(alerts.contains(alert), "a test of an unknown alert {alert}");
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the files

/// The names of the alerts in the rules file.
fn alerts() -> Vec<String> {
    read(RULES)
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .collect()
}

/// The `expr` of every rule: a block (`expr: |`, the lines indented under it) or one line.
fn rule_expressions() -> Vec<String> {
    let rules = read(RULES);
    let lines: Vec<&str> = rules.lines().collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    let mut exprs = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if !rest.starts_with(['|', '>']) {
            exprs.push(rest.to_owned());
            continue;
        }
        let block: Vec<&str> = lines[n + 1..]
            .iter()
            .take_while(|next| next.trim().is_empty() || indent(next) > indent(line))
            .copied()
            .collect();
        exprs.push(block.join("\n"));
    }
    exprs
}

/// Every query of the dashboard: the panels' targets, and the metric that each variable's
/// `label_values(metric{...}, label)` reads.
fn dashboard_queries() -> Vec<String> {
    let dashboard: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    let mut queries = Vec::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().expect("a query").to_owned());
        }
    }
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    for variable in variables {
        let Some(query) = variable["query"]["query"].as_str() else {
            continue;
        };
        let metric = query
            .strip_prefix("label_values(")
            .and_then(|args| args.rsplit_once(','))
            .map(|(metric, _)| metric)
            .unwrap_or_else(|| panic!("not label_values(metric, label): {query}"));
        queries.push(metric.to_owned());
    }
    assert!(queries.len() > 10, "{queries:?}");
    queries
}

/// The metric names in a PromQL expression: what is left once strings, label matchers, range
/// durations, numbers, keywords, function and aggregation names and the label lists of `by`,
/// `without`, `on`, `ignoring`, `group_left` and `group_right` are taken out.
fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "inf",
        "nan",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Blank out `{...}`, `[...]` and strings.
    let mut plain = String::new();
    let mut depth = 0;
    let mut quoted = false;
    for c in expr.chars() {
        match c {
            '"' if depth == 0 => quoted = !quoted,
            '{' | '[' if !quoted => depth += 1,
            '}' | ']' if !quoted => depth -= 1,
            _ if depth == 0 && !quoted => plain.push(c),
            _ => {}
        }
        if depth > 0 || quoted || c == '"' {
            plain.push(' ');
        }
    }
    let chars: Vec<char> = plain.chars().collect();
    let next_non_space = |from: usize| chars[from..].iter().position(|c| !c.is_whitespace());
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            // A number, exponent and all.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
        {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let call = next_non_space(i).is_some_and(|n| chars[i + n] == '(');
        if LABEL_LISTS.contains(&word.as_str()) {
            if call {
                let close = chars[i..]
                    .iter()
                    .position(|&c| c == ')')
                    .expect("a label list");
                i += close + 1;
            }
            continue;
        }
        if call || KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
            continue;
        }
        names.push(word);
    }
    names
}

pub(crate) fn metric_names_skips_what_is_not_a_metric() {
    let expr = r#"(sum by (job, le) (rate(a_bucket{kind=~"x|y", le="+Inf"}[5m])) / ignoring(kind) group_left sum(b) or on() c_total > 1e3) * 0.5"#;
    assert_eq!(metric_names(expr), ["a_bucket", "b", "c_total"]);
}
