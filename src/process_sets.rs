//! Process sets: the prefix tree of a group (`docs/lambda-grpo.md` §5) and its statistics (§7).
//!
//! For token `t` of completion `i`, `λ_{i,t}` is the set of completions of the same group that agree
//! with `y_i` on every token up to and including `t` (§5). Along one completion the sets are nested and
//! shrink; a maximal run of tokens with the same set is one *process step*, i.e. one node of the
//! compressed trie, here a [`ProcessNode`].
//!
//! The tree is built by recursive partitioning instead of a hash-keyed trie: a node's members are
//! split by their next token, so the work is `O(Σ|y_i| · log G)` with no hashing, and the members of
//! every compressed node fall out directly. The trainer calls it every step (goal: < 2 % of step time).

use anyhow::{bail, Result};
use serde::Serialize;

/// One process step: a node of the compressed trie of a group (§5).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessNode {
    /// The completions (indices within the group, ascending) that pass through this step: `λ`.
    pub members: Vec<usize>,
    /// Position (from 0, within the completion) of the step's first token.
    pub start: usize,
    /// The step's token ids, shared by every member at positions `start..start + tokens.len()`.
    pub tokens: Vec<u32>,
    /// The enclosing step, `None` for a step that starts right after the prompt.
    pub parent: Option<usize>,
    /// The steps that follow, ordered by first occurrence in the group.
    pub children: Vec<usize>,
}

impl ProcessNode {
    /// `|λ|`: how many completions share this step.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Token span `start..end` (exclusive) within each member completion.
    pub fn span(&self) -> std::ops::Range<usize> {
        self.start..self.start + self.tokens.len()
    }
}

/// The compressed prefix tree of one group; the prompt is the (implicit) root.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessTree {
    /// `G`: number of completions in the group (empty completions included).
    pub group_size: usize,
    /// Length of every completion.
    pub lengths: Vec<usize>,
    /// All process steps; a parent always precedes its children.
    pub nodes: Vec<ProcessNode>,
    /// Steps that start right after the prompt.
    pub roots: Vec<usize>,
    /// The steps along each completion, root first (its length is the completion's path depth).
    pub paths: Vec<Vec<usize>>,
}

/// Per-group statistics of §7.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupStats {
    /// Number of distinct sets `λ_{i,t}` = nodes of the compressed trie.
    pub num_process_sets: usize,
    /// Per completion: number of distinct sets along it (0 for an empty completion).
    pub path_depth: Vec<usize>,
    /// Mean of `path_depth` over the group's completions.
    pub mean_path_depth: f64,
    /// Per completion: fraction of its tokens with `|λ| > 1` (0 for an empty completion).
    pub intermediate_proportion: Vec<f64>,
    /// Mean of `intermediate_proportion` over the group's completions.
    pub mean_intermediate_proportion: f64,
    /// Some token has `1 < |λ| < G`: only then is the implicit PRM's step reward informative.
    pub non_trivial: bool,
    /// `Σ_{i,t} 1/|λ_{i,t}|` = number of distinct prefixes (uncompressed trie nodes) of the group.
    pub sum_inverse_lambda: f64,
    /// `lambda_histogram[k]` = number of tokens with `|λ| = k` (index 0 is always 0).
    pub lambda_histogram: Vec<u64>,
}

/// Statistics of §7 aggregated over the groups of a step (or a whole run).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BatchProcessStats {
    pub num_groups: usize,
    /// Share of groups with `non_trivial` set.
    pub non_trivial_fraction: f64,
    /// Mean over groups of the group's mean path depth.
    pub mean_path_depth: f64,
    /// Mean over groups of the group's mean intermediate proportion.
    pub mean_intermediate_proportion: f64,
    /// Mean over groups of the number of process sets.
    pub mean_num_process_sets: f64,
    /// `lambda_histogram[k]` = number of tokens of the batch with `|λ| = k`.
    pub lambda_histogram: Vec<u64>,
}

impl ProcessTree {
    /// Builds the compressed trie of one group's completions (token ids, padding removed).
    pub fn build<S: AsRef<[u32]>>(group: &[S]) -> ProcessTree {
        let seqs: Vec<&[u32]> = group.iter().map(|s| s.as_ref()).collect();
        let mut tree = ProcessTree {
            group_size: seqs.len(),
            lengths: seqs.iter().map(|s| s.len()).collect(),
            nodes: Vec::new(),
            roots: Vec::new(),
            paths: vec![Vec::new(); seqs.len()],
        };
        // Work items: (members agreeing on y[..start], start position, parent node).
        let initial: Vec<usize> = (0..seqs.len()).filter(|&i| !seqs[i].is_empty()).collect();
        let mut stack: Vec<(Vec<usize>, usize, Option<usize>)> = Vec::new();
        for part in partition_by_token(&seqs, initial, 0).into_iter().rev() {
            stack.push((part, 0, None));
        }
        while let Some((members, start, parent)) = stack.pop() {
            // Extend the step while every member continues with the same token.
            let first = members[0];
            let mut end = start + 1;
            while let Some(&tok) = seqs[first].get(end) {
                if !members.iter().all(|&j| seqs[j].get(end) == Some(&tok)) {
                    break;
                }
                end += 1;
            }
            let id = tree.nodes.len();
            for &j in &members {
                tree.paths[j].push(id);
            }
            match parent {
                Some(p) => tree.nodes[p].children.push(id),
                None => tree.roots.push(id),
            }
            let continuing: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&j| seqs[j].len() > end)
                .collect();
            tree.nodes.push(ProcessNode {
                members,
                start,
                tokens: seqs[first][start..end].to_vec(),
                parent,
                children: Vec::new(),
            });
            if !continuing.is_empty() {
                for part in partition_by_token(&seqs, continuing, end).into_iter().rev() {
                    stack.push((part, end, Some(id)));
                }
            }
        }
        tree
    }

    /// `|λ_{i,t}|` for every token of every completion (§5).
    pub fn lambda_sizes(&self) -> Vec<Vec<u32>> {
        let mut out: Vec<Vec<u32>> = self.lengths.iter().map(|&n| vec![0; n]).collect();
        for node in &self.nodes {
            let size = node.size() as u32;
            for &i in &node.members {
                out[i][node.span()].fill(size);
            }
        }
        out
    }

    /// Monte-Carlo step reward `R̂(λ) = (1/|λ|)·Σ_{j∈λ} r_j` of every node (§5), indexed like `nodes`.
    pub fn step_rewards(&self, rewards: &[f64]) -> Result<Vec<f64>> {
        self.check_len(rewards.len(), "rewards")?;
        Ok(self.node_means(rewards))
    }

    /// Step advantage `A_{i,t} = mean_{j∈λ_{i,t}} a_j` for every token (§5), given the group's `a_i`.
    ///
    /// Uses the second form of §5 (`a` is affine in `r`), equal to `(R̂(λ) − mean r)/(s + eps)`.
    pub fn step_advantages(&self, advantages: &[f64]) -> Result<Vec<Vec<f64>>> {
        self.check_len(advantages.len(), "advantages")?;
        let means = self.node_means(advantages);
        let mut out: Vec<Vec<f64>> = self.lengths.iter().map(|&n| vec![0.0; n]).collect();
        for (node, &m) in self.nodes.iter().zip(&means) {
            for &i in &node.members {
                out[i][node.span()].fill(m);
            }
        }
        Ok(out)
    }

    /// The group statistics of §7.
    pub fn stats(&self) -> GroupStats {
        let g = self.group_size;
        let mut hist = vec![0u64; g + 1];
        let mut shared_tokens = vec![0usize; g];
        let mut non_trivial = false;
        let mut distinct_prefixes = 0usize;
        for node in &self.nodes {
            let size = node.size();
            let len = node.tokens.len();
            hist[size] += (size * len) as u64;
            distinct_prefixes += len;
            if size > 1 {
                for &i in &node.members {
                    shared_tokens[i] += len;
                }
                if size < g {
                    non_trivial = true;
                }
            }
        }
        let path_depth: Vec<usize> = self.paths.iter().map(Vec::len).collect();
        let intermediate_proportion: Vec<f64> = shared_tokens
            .iter()
            .zip(&self.lengths)
            .map(|(&s, &n)| if n == 0 { 0.0 } else { s as f64 / n as f64 })
            .collect();
        GroupStats {
            num_process_sets: self.nodes.len(),
            mean_path_depth: mean(path_depth.iter().map(|&d| d as f64)),
            path_depth,
            mean_intermediate_proportion: mean(intermediate_proportion.iter().copied()),
            intermediate_proportion,
            non_trivial,
            sum_inverse_lambda: distinct_prefixes as f64,
            lambda_histogram: hist,
        }
    }

    fn node_means(&self, values: &[f64]) -> Vec<f64> {
        self.nodes
            .iter()
            .map(|n| n.members.iter().map(|&j| values[j]).sum::<f64>() / n.size() as f64)
            .collect()
    }

    fn check_len(&self, got: usize, what: &str) -> Result<()> {
        if got != self.group_size {
            bail!(
                "{what}: expected one value per completion of the group ({}), got {got}",
                self.group_size
            );
        }
        Ok(())
    }
}

/// Splits `members` (all with a token at `pos`) by `y[pos]`; parts ordered by first occurrence.
fn partition_by_token(seqs: &[&[u32]], mut members: Vec<usize>, pos: usize) -> Vec<Vec<usize>> {
    // Stable sort keeps members ascending inside a part; then order parts by their first member.
    members.sort_by_key(|&j| seqs[j][pos]);
    let mut parts: Vec<Vec<usize>> = Vec::new();
    for j in members {
        match parts.last_mut() {
            Some(p) if seqs[p[0]][pos] == seqs[j][pos] => p.push(j),
            _ => parts.push(vec![j]),
        }
    }
    parts.sort_by_key(|p| p[0]);
    parts
}

fn mean(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = values.len();
    if n == 0 {
        0.0
    } else {
        values.sum::<f64>() / n as f64
    }
}

/// Builds the tree of a group (shorthand for [`ProcessTree::build`]).
pub fn build<S: AsRef<[u32]>>(group: &[S]) -> ProcessTree {
    ProcessTree::build(group)
}

/// `|λ_{i,t}|` for every token of one group's completions (§5).
pub fn lambda_sizes<S: AsRef<[u32]>>(group: &[S]) -> Vec<Vec<u32>> {
    ProcessTree::build(group).lambda_sizes()
}

/// A group's process sets when some of its completions are masked out of the loss.
#[derive(Debug, Clone, PartialEq)]
pub struct CountedGroup {
    /// `|λ_{i,t}|` for every token of every completion of the group; all 0 for a masked one.
    pub lambda: Vec<Vec<u32>>,
    /// §7 statistics of the counted completions alone; `None` when the whole group is masked.
    pub stats: Option<GroupStats>,
}

/// Process sets of one group in which `counted[i] = false` masks completion `i` out of the loss
/// (`mask_truncated_completions`, `skip_zero_std_groups`).
///
/// A masked completion has length 0 (§1, §5): it joins no process set, so it neither inflates
/// the `|λ|` of the completions it shares a prefix with nor counts in the statistics.
pub fn counted_group<S: AsRef<[u32]>>(group: &[S], counted: &[bool]) -> Result<CountedGroup> {
    if counted.len() != group.len() {
        bail!(
            "{} mask flags for a group of {} completions",
            counted.len(),
            group.len()
        );
    }
    let kept: Vec<&[u32]> = group
        .iter()
        .zip(counted)
        .filter(|(_, &c)| c)
        .map(|(s, _)| s.as_ref())
        .collect();
    let tree = ProcessTree::build(&kept);
    let mut sizes = tree.lambda_sizes().into_iter();
    let lambda = group
        .iter()
        .zip(counted)
        .map(|(s, &c)| match c {
            true => sizes.next().unwrap_or_default(),
            false => vec![0; s.as_ref().len()],
        })
        .collect();
    let stats = (!kept.is_empty()).then(|| tree.stats());
    Ok(CountedGroup { lambda, stats })
}

/// The group statistics of §7 for one group.
pub fn group_stats<S: AsRef<[u32]>>(group: &[S]) -> GroupStats {
    ProcessTree::build(group).stats()
}

/// Aggregates §7 over the groups of a step: means over groups, share of non-trivial groups, histogram.
pub fn batch_stats(groups: &[GroupStats]) -> BatchProcessStats {
    let n = groups.len();
    let mut hist: Vec<u64> = Vec::new();
    for g in groups {
        if hist.len() < g.lambda_histogram.len() {
            hist.resize(g.lambda_histogram.len(), 0);
        }
        for (h, &c) in hist.iter_mut().zip(&g.lambda_histogram) {
            *h += c;
        }
    }
    BatchProcessStats {
        num_groups: n,
        non_trivial_fraction: mean(groups.iter().map(|g| f64::from(u8::from(g.non_trivial)))),
        mean_path_depth: mean(groups.iter().map(|g| g.mean_path_depth)),
        mean_intermediate_proportion: mean(groups.iter().map(|g| g.mean_intermediate_proportion)),
        mean_num_process_sets: mean(groups.iter().map(|g| g.num_process_sets as f64)),
        lambda_histogram: hist,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force of the §5 definition.
    fn brute(group: &[Vec<u32>]) -> Vec<Vec<u32>> {
        group
            .iter()
            .map(|yi| {
                (0..yi.len())
                    .map(|t| {
                        group
                            .iter()
                            .filter(|yj| yj.len() > t && yj[..=t] == yi[..=t])
                            .count() as u32
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn shared_prefix_example_tree() {
        let g: Vec<Vec<u32>> = vec![
            vec![10, 11, 12, 13, 2],
            vec![10, 11, 12, 14, 15, 16, 17, 2],
            vec![10, 11, 12, 14, 15, 18, 2],
            vec![19, 20, 2],
            vec![19, 21, 2],
            vec![16, 17, 18, 19, 2],
        ];
        let tree = ProcessTree::build(&g);
        assert_eq!(tree.nodes.len(), 9);
        assert_eq!(tree.roots.len(), 3);
        let root = &tree.nodes[tree.roots[0]];
        assert_eq!(root.members, vec![0, 1, 2]);
        assert_eq!(root.tokens, vec![10, 11, 12]);
        assert_eq!(root.children.len(), 2);
        assert_eq!(tree.lambda_sizes(), brute(&g));
        let r = tree.step_rewards(&[1.0, 0.0, 0.0, 1.0, 1.0, 0.0]).unwrap();
        assert!((r[tree.roots[0]] - 1.0 / 3.0).abs() < 1e-15);
        assert!((r[tree.roots[1]] - 1.0).abs() < 1e-15);
        assert!(tree.step_rewards(&[1.0]).is_err());
    }

    #[test]
    fn empty_and_prefix_completions() {
        let g: Vec<Vec<u32>> = vec![vec![], vec![1, 2], vec![1, 2, 3], vec![1]];
        let tree = ProcessTree::build(&g);
        assert_eq!(tree.lambda_sizes(), brute(&g));
        let s = tree.stats();
        assert_eq!(s.path_depth, vec![0, 2, 3, 1]);
        assert_eq!(s.intermediate_proportion[0], 0.0);
        assert_eq!(s.num_process_sets, 3);
        assert!(s.non_trivial);
        assert_eq!(s.lambda_histogram, vec![0, 1, 2, 3, 0]);
    }

    #[test]
    fn masked_completions_join_no_process_set() {
        // The example: [5,6,7] truncated and masked; [5,6,2] gets [2,1,1], not [3,2,1].
        let g: Vec<Vec<u32>> = vec![vec![5, 6, 7], vec![5, 6, 2], vec![5, 8, 2]];
        let all = counted_group(&g, &[true; 3]).unwrap();
        assert_eq!(all.lambda[1], vec![3, 2, 1]);
        let c = counted_group(&g, &[false, true, true]).unwrap();
        assert_eq!(c.lambda, vec![vec![0, 0, 0], vec![2, 1, 1], vec![2, 1, 1]]);
        // Statistics are those of the two counted completions: sets {1,2} and {1}, {2}.
        let s = c.stats.unwrap();
        assert_eq!(s.num_process_sets, 3);
        assert_eq!(s.path_depth, vec![2, 2]);
        assert_eq!(s.lambda_histogram, vec![0, 4, 2]);
        assert!((s.mean_intermediate_proportion - 1.0 / 3.0).abs() < 1e-15);
        // With every completion counted the masked one would inflate them.
        let full = all.stats.unwrap();
        assert_eq!(full.num_process_sets, 5);
        assert_eq!(full.lambda_histogram, vec![0, 4, 2, 3]);
        // A whole group masked (e.g. skip_zero_std_groups): no sets, no statistics.
        let none = counted_group(&g, &[false; 3]).unwrap();
        assert_eq!(none.lambda, vec![vec![0; 3]; 3]);
        assert_eq!(none.stats, None);
        assert!(counted_group(&g, &[true]).is_err());
    }
}
