//! §7 statistics of rollout groups (`docs/lambda-grpo.md`), per group, per step and overall.
//!
//! The trees and per-group numbers come from [`crate::process_sets`], the same code the
//! trainer logs `process/*` metrics with, so `grpo analyze` on a dump reproduces those metrics.

use std::fmt::Write as _;

use serde::Serialize;

use crate::analysis::rollouts::RolloutGroup;
use crate::process_sets::{batch_stats, GroupStats, ProcessTree};

/// One process set (node of the compressed trie) with its Monte-Carlo step reward.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessSetSummary {
    /// Index of the node in the tree (parents precede children).
    pub id: usize,
    pub parent: Option<usize>,
    /// Number of process steps from the prompt to this one (1 for a step right after the prompt).
    pub depth: usize,
    /// Token span `start..start + len` within each member completion.
    pub start: usize,
    pub len: usize,
    /// `|λ|`.
    pub size: usize,
    /// `R̂(λ)`: mean reward of the members.
    pub mc_reward: f64,
    pub members: Vec<usize>,
}

/// One group's tree statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupAnalysis {
    pub step: usize,
    /// Index of the group within its step (input order).
    pub group: usize,
    pub prompt: String,
    pub group_size: usize,
    /// Mean outcome reward of the group (the `R̂` of the implicit root).
    pub reward_mean: f64,
    /// The fields of `losses.json`'s `group_stats`, plus the `|λ|` histogram over tokens.
    #[serde(flatten)]
    pub stats: GroupStats,
    pub process_sets: Vec<ProcessSetSummary>,
}

/// Aggregate over a set of groups: means over groups, as in §7.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Aggregate {
    /// Number of groups.
    pub groups: usize,
    pub completions: usize,
    pub tokens: u64,
    pub non_trivial_fraction: f64,
    pub mean_num_process_sets: f64,
    /// Mean over groups of the group's mean path depth over its completions.
    pub mean_path_depth: f64,
    /// Mean over groups of the group's mean intermediate proportion over its completions.
    pub mean_intermediate_proportion: f64,
    /// `lambda_histogram[k]` = number of tokens with `|λ| = k`.
    pub lambda_histogram: Vec<u64>,
    /// Token-weighted mean of `|λ|`.
    pub mean_lambda: f64,
    pub reward_mean: f64,
}

/// [`Aggregate`] of the groups of one training step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepAggregate {
    pub step: usize,
    #[serde(flatten)]
    pub stats: Aggregate,
}

/// What `grpo analyze --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub overall: Aggregate,
    pub steps: usize,
    pub per_step: Vec<StepAggregate>,
    /// Every group's statistics and process sets (empty with `--brief`).
    pub group_stats: Vec<GroupAnalysis>,
}

/// Statistics of one group; `index` is its position within its step.
pub fn analyze_group(group: &RolloutGroup, index: usize) -> GroupAnalysis {
    let tree = ProcessTree::build(&group.token_ids());
    let rewards = group.rewards();
    let stats = tree.stats();
    let mc = mc_rewards(&tree, &rewards);
    let depths = node_depths(&tree);
    let process_sets = tree
        .nodes
        .iter()
        .enumerate()
        .map(|(id, n)| ProcessSetSummary {
            id,
            parent: n.parent,
            depth: depths[id],
            start: n.start,
            len: n.tokens.len(),
            size: n.size(),
            mc_reward: mc[id],
            members: n.members.clone(),
        })
        .collect();
    GroupAnalysis {
        step: group.step,
        group: index,
        prompt: group.prompt.clone(),
        group_size: tree.group_size,
        reward_mean: mean(&rewards),
        stats,
        process_sets,
    }
}

/// Statistics of every group; groups are numbered within their step in input order.
pub fn analyze_groups(groups: &[RolloutGroup]) -> Vec<GroupAnalysis> {
    let mut out = Vec::with_capacity(groups.len());
    let mut last_step = None;
    let mut index = 0;
    for g in groups {
        if last_step != Some(g.step) {
            last_step = Some(g.step);
            index = 0;
        }
        out.push(analyze_group(g, index));
        index += 1;
    }
    out
}

/// Aggregates groups the way the trainer's `process/*` metrics do ([`batch_stats`]).
pub fn aggregate(groups: &[&GroupAnalysis]) -> Aggregate {
    let stats: Vec<GroupStats> = groups.iter().map(|g| g.stats.clone()).collect();
    let b = batch_stats(&stats);
    let tokens: u64 = b.lambda_histogram.iter().sum();
    let weighted: u64 = b
        .lambda_histogram
        .iter()
        .enumerate()
        .map(|(k, &c)| k as u64 * c)
        .sum();
    let completions = groups.iter().map(|g| g.group_size).sum::<usize>();
    let reward_sum: f64 = groups
        .iter()
        .map(|g| g.reward_mean * g.group_size as f64)
        .sum();
    Aggregate {
        groups: b.num_groups,
        completions,
        tokens,
        non_trivial_fraction: b.non_trivial_fraction,
        mean_num_process_sets: b.mean_num_process_sets,
        mean_path_depth: b.mean_path_depth,
        mean_intermediate_proportion: b.mean_intermediate_proportion,
        lambda_histogram: b.lambda_histogram,
        mean_lambda: ratio(weighted as f64, tokens as f64),
        reward_mean: ratio(reward_sum, completions as f64),
    }
}

/// The full report: overall, per step (ascending), and (unless `brief`) every group.
pub fn report(groups: &[RolloutGroup], brief: bool) -> Report {
    let analyses = analyze_groups(groups);
    let mut steps: Vec<usize> = analyses.iter().map(|g| g.step).collect();
    steps.sort_unstable();
    steps.dedup();
    let per_step = steps
        .iter()
        .map(|&s| StepAggregate {
            step: s,
            stats: aggregate(&analyses.iter().filter(|g| g.step == s).collect::<Vec<_>>()),
        })
        .collect();
    Report {
        overall: aggregate(&analyses.iter().collect::<Vec<_>>()),
        steps: steps.len(),
        per_step,
        group_stats: if brief { Vec::new() } else { analyses },
    }
}

/// The report as a plain-text table: one row per step, then the overall row.
pub fn format_table(report: &Report, per_group: bool) -> String {
    let mut s = String::new();
    if per_group && !report.group_stats.is_empty() {
        let _ = writeln!(
            s,
            "{:>6} {:>5} {:>3} {:>5} {:>6} {:>6} {:>5} {:>8}  prompt",
            "step", "group", "G", "sets", "depth", "interm", "n-tr", "reward"
        );
        for g in &report.group_stats {
            let _ = writeln!(
                s,
                "{:>6} {:>5} {:>3} {:>5} {:>6.3} {:>6.3} {:>5} {:>8.3}  {}",
                g.step,
                g.group,
                g.group_size,
                g.stats.num_process_sets,
                g.stats.mean_path_depth,
                g.stats.mean_intermediate_proportion,
                if g.stats.non_trivial { "yes" } else { "no" },
                g.reward_mean,
                one_line(&g.prompt, 48)
            );
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "{:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8}  |λ| histogram (size:tokens)",
        "step", "groups", "non-triv", "sets", "depth", "interm", "mean|λ|", "reward"
    );
    let row = |s: &mut String, label: &str, a: &Aggregate| {
        let _ = writeln!(
            s,
            "{:>6} {:>6} {:>7.1}% {:>8.3} {:>8.3} {:>8.3} {:>7.3} {:>8.3}  {}",
            label,
            a.groups,
            100.0 * a.non_trivial_fraction,
            a.mean_num_process_sets,
            a.mean_path_depth,
            a.mean_intermediate_proportion,
            a.mean_lambda,
            a.reward_mean,
            histogram_text(&a.lambda_histogram)
        );
    };
    for st in &report.per_step {
        row(&mut s, &st.step.to_string(), &st.stats);
    }
    row(&mut s, "all", &report.overall);
    s
}

/// `size:count` pairs of the non-empty histogram bins.
pub fn histogram_text(hist: &[u64]) -> String {
    let parts: Vec<String> = hist
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(k, c)| format!("{k}:{c}"))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

/// `R̂` of every node of a tree built from the same group the rewards come from.
pub(crate) fn mc_rewards(tree: &ProcessTree, rewards: &[f64]) -> Vec<f64> {
    tree.step_rewards(rewards)
        .expect("the tree and the rewards come from the same group")
}

/// Depth of every node (1 for a root); parents precede children in `tree.nodes`.
pub(crate) fn node_depths(tree: &ProcessTree) -> Vec<usize> {
    let mut d = vec![0usize; tree.nodes.len()];
    for (i, n) in tree.nodes.iter().enumerate() {
        d[i] = n.parent.map_or(1, |p| d[p] + 1);
    }
    d
}

/// First `max` characters of `text` on one line, control characters escaped.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if flat.chars().count() > max {
        let mut t: String = flat.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    } else {
        flat
    }
}

fn mean(v: &[f64]) -> f64 {
    ratio(v.iter().sum(), v.len() as f64)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}
