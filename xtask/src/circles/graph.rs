//! A directed graph of named nodes and its strongly connected components (Tarjan's
//! algorithm, iterative so that a deep graph cannot overflow the stack).

use std::collections::BTreeMap;

/// A directed graph whose nodes have names; each edge keeps one label (for the module
/// graph: an example of the path that made the edge).
#[derive(Clone, Debug, Default)]
pub(super) struct Graph {
    names: Vec<String>,
    /// For each node, its successors with the label of the edge.
    edges: Vec<BTreeMap<usize, String>>,
}

impl Graph {
    /// Add a node and return its index.
    pub(super) fn add_node(&mut self, name: impl Into<String>) -> usize {
        self.names.push(name.into());
        self.edges.push(BTreeMap::new());
        self.names.len() - 1
    }

    /// Add the edge `from -> to`, labelled `label` unless it already has a label. An edge
    /// from a node to itself is not added: a module using its own items is no circle.
    pub(super) fn add_edge(&mut self, from: usize, to: usize, label: impl Into<String>) {
        if from != to {
            self.edges[from].entry(to).or_insert_with(|| label.into());
        }
    }

    /// The name of node `n`.
    pub(super) fn name(&self, n: usize) -> &str {
        &self.names[n]
    }

    /// How many nodes there are.
    #[cfg(test)]
    pub(super) fn node_count(&self) -> usize {
        self.names.len()
    }

    /// The successors of `n`, with each edge's label.
    pub(super) fn successors(&self, n: usize) -> impl Iterator<Item = (usize, &str)> {
        self.edges[n]
            .iter()
            .map(|(&to, label)| (to, label.as_str()))
    }

    /// The strongly connected components with more than one node: the circles. Each is
    /// sorted by node name, and the list by its first name.
    pub(super) fn circles(&self) -> Vec<Vec<usize>> {
        let mut circles: Vec<Vec<usize>> = self
            .components()
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|mut c| {
                c.sort_by(|&a, &b| self.names[a].cmp(&self.names[b]));
                c
            })
            .collect();
        circles.sort_by(|a, b| self.names[a[0]].cmp(&self.names[b[0]]));
        circles
    }

    /// Every strongly connected component (Tarjan).
    fn components(&self) -> Vec<Vec<usize>> {
        let mut t = Tarjan {
            graph: self,
            index: vec![None; self.names.len()],
            low: vec![0; self.names.len()],
            on_stack: vec![false; self.names.len()],
            stack: Vec::new(),
            calls: Vec::new(),
            next: 0,
            components: Vec::new(),
        };
        for start in 0..self.names.len() {
            if t.index[start].is_none() {
                t.visit(start);
            }
        }
        t.components
    }
}

/// Tarjan's algorithm's state.
struct Tarjan<'g> {
    graph: &'g Graph,
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    /// The explicit call stack: a node, its successors, and how many were visited.
    calls: Vec<(usize, Vec<usize>, usize)>,
    next: usize,
    components: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn enter(&mut self, v: usize) {
        self.index[v] = Some(self.next);
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        let successors = self.graph.edges[v].keys().copied().collect();
        self.calls.push((v, successors, 0));
    }

    fn visit(&mut self, start: usize) {
        self.enter(start);
        while let Some((v, successors, done)) = self.calls.last_mut() {
            let v = *v;
            if let Some(&w) = successors.get(*done) {
                *done += 1;
                match self.index[w] {
                    None => self.enter(w),
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
                continue;
            }
            self.calls.pop();
            if let Some(&(parent, _, _)) = self.calls.last() {
                self.low[parent] = self.low[parent].min(self.low[v]);
            }
            if Some(self.low[v]) == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                self.components.push(component);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(names: &[&str], edges: &[(usize, usize)]) -> Graph {
        let mut g = Graph::default();
        for name in names {
            g.add_node(*name);
        }
        for &(a, b) in edges {
            g.add_edge(a, b, format!("{a}->{b}"));
        }
        g
    }

    fn named(g: &Graph, circles: Vec<Vec<usize>>) -> Vec<Vec<&str>> {
        circles
            .into_iter()
            .map(|c| c.into_iter().map(|n| g.name(n)).collect())
            .collect()
    }

    #[test]
    fn finds_each_circle_once() {
        // a -> b -> c -> a, c -> d, d -> e -> d, f alone, g -> g (a self-loop is no circle).
        let g = graph(
            &["c", "b", "a", "d", "e", "f", "g"],
            &[(2, 1), (1, 0), (0, 2), (0, 3), (3, 4), (4, 3), (6, 6)],
        );
        assert_eq!(
            named(&g, g.circles()),
            [vec!["a", "b", "c"], vec!["d", "e"]]
        );
        assert_eq!(g.successors(6).count(), 0);
    }

    #[test]
    fn a_dag_has_none() {
        let g = graph(
            &["a", "b", "c", "d"],
            &[(0, 1), (0, 2), (1, 3), (2, 3), (0, 3)],
        );
        assert!(g.circles().is_empty());
        assert_eq!(
            g.successors(0).map(|(_, l)| l).collect::<Vec<_>>(),
            ["0->1", "0->2", "0->3"]
        );
    }

    #[test]
    fn a_long_chain_closed_at_the_end() {
        let n = 50_000;
        let names: Vec<String> = (0..n).map(|i| format!("m{i:05}")).collect();
        let mut g = Graph::default();
        for name in &names {
            g.add_node(name.clone());
        }
        for i in 0..n - 1 {
            g.add_edge(i, i + 1, "");
        }
        assert!(g.circles().is_empty());
        g.add_edge(n - 1, 0, "back");
        assert_eq!(g.circles()[0].len(), n);
    }
}
