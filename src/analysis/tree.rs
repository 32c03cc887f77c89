//! One group's compressed prefix tree, as indented text or as a picture (`grpo analyze --group`).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::analysis::font::ensure_fonts;
use crate::analysis::groups::{mc_rewards, node_depths, one_line};
use crate::analysis::rollouts::RolloutGroup;
use crate::analysis::ImageFormat;
use crate::model::Tokenizer;
use crate::process_sets::ProcessTree;

/// A group's tree with everything the text and the picture show.
pub struct TreeView<'a> {
    pub group: &'a RolloutGroup,
    /// Index of the group within its step.
    pub index: usize,
    pub tree: ProcessTree,
    /// `R̂` per node.
    pub mc: Vec<f64>,
    /// Depth per node (1 = right after the prompt).
    pub depths: Vec<usize>,
    /// The node's token span: decoded text, or token ids without a tokenizer.
    pub labels: Vec<String>,
    /// Whether `labels` hold decoded text (quoted when shown) rather than token ids.
    pub decoded: bool,
}

impl<'a> TreeView<'a> {
    pub fn new(
        group: &'a RolloutGroup,
        index: usize,
        tokenizer: Option<&Tokenizer>,
    ) -> Result<TreeView<'a>> {
        let tree = ProcessTree::build(&group.token_ids());
        let mc = mc_rewards(&tree, &group.rewards());
        let depths = node_depths(&tree);
        let labels = tree
            .nodes
            .iter()
            .map(|n| -> Result<String> {
                let Some(tok) = tokenizer else {
                    return Ok(ids_text(&n.tokens, 24));
                };
                // Decode the whole prefix and cut, so that multi-token characters survive.
                let y = &group.completions[n.members[0]].token_ids;
                let full = tok.decode(&y[..n.span().end], false)?;
                let pre = tok.decode(&y[..n.start], false)?;
                Ok(match full.strip_prefix(pre.as_str()) {
                    Some(rest) => rest.to_string(),
                    None => tok.decode(&n.tokens, false)?,
                })
            })
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("decoding the completions of {}", group.source))?;
        Ok(TreeView {
            group,
            index,
            tree,
            mc,
            depths,
            labels,
            decoded: tokenizer.is_some(),
        })
    }

    fn quote(&self, id: usize, max: usize) -> String {
        if self.decoded {
            format!("\"{}\"", one_line(&self.labels[id], max))
        } else {
            one_line(&self.labels[id], max)
        }
    }

    fn header(&self) -> String {
        let s = self.tree.stats();
        format!(
            "step {} · group {} · G = {} · mean reward {:.3} · {} process sets · path depth {:.2} · intermediate {:.3} · {}",
            self.group.step,
            self.index,
            self.tree.group_size,
            mean(&self.group.rewards()),
            s.num_process_sets,
            s.mean_path_depth,
            s.mean_intermediate_proportion,
            if s.non_trivial { "non-trivial" } else { "trivial" }
        )
    }

    /// Indented text: one line per process step, children indented under their parent.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}", self.header());
        let _ = writeln!(s, "prompt: {}", one_line(&self.group.prompt, 200));
        if !self.group.answer.is_empty() {
            let _ = writeln!(s, "answer: {}", one_line(&self.group.answer, 200));
        }
        for (i, c) in self.group.completions.iter().enumerate() {
            let _ = writeln!(
                s,
                "  y{i}: reward {:.4}, advantage {:+.4}, {} tokens, path depth {}",
                c.reward,
                c.advantage,
                c.token_ids.len(),
                self.tree.paths[i].len()
            );
        }
        let _ = writeln!(
            s,
            "tree (|λ| = completions through the step, R̂ = their mean reward):"
        );
        let _ = writeln!(
            s,
            "prompt  |λ|={}  R̂={:.4}",
            self.tree.group_size,
            mean(&self.group.rewards())
        );
        let mut stack: Vec<usize> = self.tree.roots.iter().rev().copied().collect();
        while let Some(id) = stack.pop() {
            let n = &self.tree.nodes[id];
            let ends: Vec<usize> = n
                .members
                .iter()
                .copied()
                .filter(|&j| self.tree.lengths[j] == n.span().end)
                .collect();
            let end_note = if ends.is_empty() {
                String::new()
            } else {
                format!("  ends: {}", members_text(&ends))
            };
            let _ = writeln!(
                s,
                "{}- [{}..{}) |λ|={}  R̂={:.4}  {}  {}{}",
                "  ".repeat(self.depths[id]),
                n.start,
                n.span().end,
                n.size(),
                self.mc[id],
                members_text(&n.members),
                self.quote(id, 120),
                end_note
            );
            stack.extend(n.children.iter().rev());
        }
        s
    }

    /// Draws the tree: the prompt on the left, one column per depth, boxes coloured by `R̂`.
    pub fn draw(&self, path: &Path, format: ImageFormat) -> Result<()> {
        ensure_fonts()?;
        let layout = Layout::new(self);
        let size = (layout.width, layout.height);
        match format {
            ImageFormat::Png => {
                let root = BitMapBackend::new(path, size).into_drawing_area();
                self.draw_on(&root, &layout)?;
                root.present().map_err(|e| anyhow!("{e}"))
            }
            ImageFormat::Svg => {
                let root = SVGBackend::new(path, size).into_drawing_area();
                self.draw_on(&root, &layout)?;
                root.present().map_err(|e| anyhow!("{e}"))
            }
        }
        .with_context(|| format!("writing {}", path.display()))
    }

    fn draw_on<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, l: &Layout) -> Result<()> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the tree: {e}");
        root.fill(&WHITE).map_err(err)?;
        let title = ("sans-serif", 16).into_font().color(&BLACK);
        let small = ("sans-serif", 12).into_font().color(&BLACK);
        root.draw(&Text::new(self.header(), (MARGIN, 10), title.clone()))
            .map_err(err)?;
        root.draw(&Text::new(
            format!("prompt: {}", one_line(&self.group.prompt, 110)),
            (MARGIN, 32),
            small.clone(),
        ))
        .map_err(err)?;
        root.draw(&Text::new(
            "box: |λ| = completions sharing the step, mean r = their mean reward (the MC step reward), token span, members; colour: low (red) to high (green) mean r",
            (MARGIN, 50),
            small.clone(),
        ))
        .map_err(err)?;

        let rewards = self.group.rewards();
        let lo = rewards.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rewards.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let colour = |r: f64| -> RGBColor {
            let t = if hi > lo { (r - lo) / (hi - lo) } else { 0.5 };
            let mix =
                |a: u8, b: u8| (f64::from(a) + t * (f64::from(b) - f64::from(a))).round() as u8;
            RGBColor(mix(244, 166), mix(165, 219), mix(150, 160))
        };
        let edge = ShapeStyle::from(&RGBColor(90, 90, 90)).stroke_width(1);

        // Edges first, so boxes cover their ends.
        for (id, n) in self.tree.nodes.iter().enumerate() {
            let (px, py) = match n.parent {
                Some(p) => l.anchor(p, self.depths[p]),
                None => (l.x(0), l.y_prompt),
            };
            let (cx, cy) = l.anchor(id, self.depths[id]);
            let (x0, x1) = (px + BOX_W, cx);
            let mid = (x0 + x1) / 2;
            root.draw(&PathElement::new(
                vec![
                    (x0, py + BOX_H / 2),
                    (mid, py + BOX_H / 2),
                    (mid, cy + BOX_H / 2),
                    (x1, cy + BOX_H / 2),
                ],
                edge,
            ))
            .map_err(err)?;
        }

        // The prompt (root).
        let (x, y) = (l.x(0), l.y_prompt);
        draw_box(
            root,
            (x, y),
            colour(mean(&rewards)),
            [
                format!("prompt  G = {}", self.tree.group_size),
                format!("mean reward {:.3}", mean(&rewards)),
                one_line(&self.group.prompt, 30),
            ],
            &small,
        )
        .map_err(err)?;
        for (id, n) in self.tree.nodes.iter().enumerate() {
            let (x, y) = l.anchor(id, self.depths[id]);
            draw_box(
                root,
                (x, y),
                colour(self.mc[id]),
                [
                    format!("|λ| = {}   mean r = {:.3}", n.size(), self.mc[id]),
                    format!(
                        "tokens {}..{}  {}",
                        n.start,
                        n.span().end,
                        members_text(&n.members)
                    ),
                    self.quote(id, 28),
                ],
                &small,
            )
            .map_err(err)?;
        }
        Ok(())
    }
}

const MARGIN: i32 = 20;
const BOX_W: i32 = 220;
const BOX_H: i32 = 58;
const COL: i32 = 270;
const ROW: i32 = 72;
const TOP: i32 = 78;

/// Box positions: one column per depth, leaves on successive rows, parents centred on children.
struct Layout {
    width: u32,
    height: u32,
    y_node: Vec<i32>,
    y_prompt: i32,
}

impl Layout {
    fn new(v: &TreeView) -> Layout {
        let nodes = &v.tree.nodes;
        let mut y_node = vec![0i32; nodes.len()];
        let mut next_row = 0i32;
        // Post-order walk: children are placed before their parent is centred on them.
        fn place(
            id: usize,
            nodes: &[crate::process_sets::ProcessNode],
            y: &mut [i32],
            row: &mut i32,
        ) {
            let n = &nodes[id];
            if n.children.is_empty() {
                y[id] = TOP + *row * ROW;
                *row += 1;
                return;
            }
            for &c in &n.children {
                place(c, nodes, y, row);
            }
            let first = y[n.children[0]];
            let last = y[n.children[n.children.len() - 1]];
            y[id] = (first + last) / 2;
        }
        for &r in &v.tree.roots {
            place(r, nodes, &mut y_node, &mut next_row);
        }
        let y_prompt = match (v.tree.roots.first(), v.tree.roots.last()) {
            (Some(&a), Some(&b)) => (y_node[a] + y_node[b]) / 2,
            _ => TOP,
        };
        let max_depth = v.depths.iter().copied().max().unwrap_or(0) as i32;
        let rows = next_row.max(1);
        Layout {
            width: (2 * MARGIN + max_depth * COL + BOX_W).max(1000) as u32,
            height: (TOP + rows * ROW + MARGIN) as u32,
            y_node,
            y_prompt,
        }
    }

    fn x(&self, depth: usize) -> i32 {
        MARGIN + depth as i32 * COL
    }

    fn anchor(&self, id: usize, depth: usize) -> (i32, i32) {
        (self.x(depth), self.y_node[id])
    }
}

fn draw_box<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    (x, y): (i32, i32),
    fill: RGBColor,
    lines: [String; 3],
    font: &TextStyle,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.draw(&Rectangle::new(
        [(x, y), (x + BOX_W, y + BOX_H)],
        fill.filled(),
    ))?;
    root.draw(&Rectangle::new(
        [(x, y), (x + BOX_W, y + BOX_H)],
        ShapeStyle::from(&RGBColor(60, 60, 60)).stroke_width(1),
    ))?;
    for (k, line) in lines.iter().enumerate() {
        root.draw(&Text::new(
            line.clone(),
            (x + 6, y + 5 + 17 * k as i32),
            font.clone(),
        ))?;
    }
    Ok(())
}

/// `{0,1,2}`, shortened for big groups.
fn members_text(m: &[usize]) -> String {
    let shown: Vec<String> = m.iter().take(8).map(usize::to_string).collect();
    if m.len() > 8 {
        format!("{{{},… +{}}}", shown.join(","), m.len() - 8)
    } else {
        format!("{{{}}}", shown.join(","))
    }
}

fn ids_text(ids: &[u32], max: usize) -> String {
    let shown: Vec<String> = ids.iter().take(max).map(u32::to_string).collect();
    if ids.len() > max {
        format!("[{} … +{}]", shown.join(" "), ids.len() - max)
    } else {
        format!("[{}]", shown.join(" "))
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}
