//! The step graph: dependency edges, cycles, levels, critical path and ancestry.
//!
//! Built once per run with petgraph; the scheduler and the reference checker read it.

use std::collections::HashMap;

use fixedbitset::FixedBitSet;
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

/// A problem with the graph's shape.
#[derive(Debug, Clone, PartialEq)]
pub enum GraphError {
    /// `step` needs `need`, which does not exist.
    UnknownNeed { step: usize, need: String, suggestion: Option<String> },
    /// Steps that depend on each other in a circle, in order; the first repeats at the end.
    Cycle { path: Vec<usize> },
}

/// The dependency graph of a runbook's steps (indices into the runbook's step list).
#[derive(Debug, Clone)]
pub struct Dag {
    pub parents: Vec<Vec<usize>>,
    pub children: Vec<Vec<usize>>,
    /// A topological order (dependencies first), stable with respect to file order.
    pub order: Vec<usize>,
    ancestors: std::sync::OnceLock<Vec<FixedBitSet>>,
}

impl Dag {
    /// Build from `(id, needs)` pairs; reports every unknown need and every cycle.
    pub fn build<'a>(
        steps: impl ExactSizeIterator<Item = (&'a str, &'a [String])> + Clone,
    ) -> Result<Dag, Vec<GraphError>> {
        let n = steps.len();
        let index: HashMap<&str, usize> = steps.clone().enumerate().map(|(i, (id, _))| (id, i)).collect();
        let mut graph: DiGraph<usize, ()> = DiGraph::with_capacity(n, n * 2);
        for i in 0..n {
            graph.add_node(i);
        }
        let mut errors = vec![];
        let mut parents = vec![vec![]; n];
        let mut children = vec![vec![]; n];
        for (i, (_, needs)) in steps.clone().enumerate() {
            for need in needs {
                match index.get(need.as_str()) {
                    Some(&p) => {
                        if !parents[i].contains(&p) {
                            parents[i].push(p);
                            children[p].push(i);
                            graph.add_edge(NodeIndex::new(p), NodeIndex::new(i), ());
                        }
                    }
                    None => {
                        let ids: Vec<&str> = index.keys().copied().collect();
                        errors.push(GraphError::UnknownNeed {
                            step: i,
                            need: need.clone(),
                            suggestion: drover_api::closest_match(need, &ids).map(str::to_string),
                        });
                    }
                }
            }
        }
        for scc in tarjan_scc(&graph) {
            let self_loop = scc.len() == 1 && parents[scc[0].index()].contains(&scc[0].index());
            if scc.len() > 1 || self_loop {
                let members: Vec<usize> = scc.iter().map(|n| n.index()).collect();
                errors.push(GraphError::Cycle { path: cycle_path(&members, &children) });
            }
        }
        if !errors.is_empty() {
            // Cycles in file order so that messages are stable.
            errors.sort_by_key(|e| match e {
                GraphError::UnknownNeed { step, .. } => (0, *step),
                GraphError::Cycle { path } => (1, *path.iter().min().unwrap_or(&0)),
            });
            return Err(errors);
        }
        let order = topo_order(&parents, &children);
        Ok(Dag { parents, children, order, ancestors: Default::default() })
    }

    pub fn len(&self) -> usize {
        self.parents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parents.is_empty()
    }

    /// Level of each step: 0 for roots, else one more than its deepest dependency.
    pub fn levels(&self) -> Vec<usize> {
        let mut level = vec![0; self.len()];
        for &i in &self.order {
            level[i] = self.parents[i].iter().map(|&p| level[p] + 1).max().unwrap_or(0);
        }
        level
    }

    /// The heaviest chain of dependencies and its total weight.
    pub fn critical_path(&self, weight: impl Fn(usize) -> f64) -> (Vec<usize>, f64) {
        let mut best = vec![0.0f64; self.len()];
        let mut via: Vec<Option<usize>> = vec![None; self.len()];
        for &i in &self.order {
            let (from, base) = self.parents[i].iter().map(|&p| (Some(p), best[p])).fold((None, 0.0), |acc, x| {
                if x.1 > acc.1 || (acc.0.is_none() && x.0.is_some() && x.1 >= acc.1) { x } else { acc }
            });
            best[i] = base + weight(i);
            via[i] = from;
        }
        // On ties prefer the step latest in topological order: the longest chain of equals.
        let Some(&end) = self.order.iter().rev().max_by(|&&a, &&b| best[a].total_cmp(&best[b])) else {
            return (vec![], 0.0);
        };
        let mut path = vec![end];
        let mut cur = end;
        while let Some(p) = via[cur] {
            path.push(p);
            cur = p;
        }
        path.reverse();
        (path, best[end])
    }

    /// True when `ancestor` must finish before `step` starts (directly or transitively).
    pub fn is_ancestor(&self, ancestor: usize, step: usize) -> bool {
        self.ancestors.get_or_init(|| self.compute_ancestors())[step].contains(ancestor)
    }

    fn compute_ancestors(&self) -> Vec<FixedBitSet> {
        let n = self.len();
        let mut sets = vec![FixedBitSet::with_capacity(n); n];
        for &i in &self.order {
            let mut set = FixedBitSet::with_capacity(n);
            for &p in &self.parents[i] {
                set.insert(p);
                set.union_with(&sets[p]);
            }
            sets[i] = set;
        }
        sets
    }
}

/// Kahn's algorithm, taking ready steps in file order.
fn topo_order(parents: &[Vec<usize>], children: &[Vec<usize>]) -> Vec<usize> {
    let n = parents.len();
    let mut missing: Vec<usize> = parents.iter().map(Vec::len).collect();
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> =
        (0..n).filter(|&i| missing[i] == 0).map(std::cmp::Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for &c in &children[i] {
            missing[c] -= 1;
            if missing[c] == 0 {
                ready.push(std::cmp::Reverse(c));
            }
        }
    }
    order
}

/// One concrete circle through the members of a strongly connected component.
fn cycle_path(members: &[usize], children: &[Vec<usize>]) -> Vec<usize> {
    let start = *members.iter().min().expect("a component has members");
    let in_scc = |i: &usize| members.contains(i);
    // Breadth-first search for the shortest way back to `start`.
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(cur) = queue.pop_front() {
        for &next in children[cur].iter().filter(|c| in_scc(c)) {
            if next == start {
                let mut path = vec![cur];
                while let Some(&p) = prev.get(path.last().expect("path has a node")) {
                    path.push(p);
                }
                path.reverse();
                path.push(start);
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(next) {
                e.insert(cur);
                queue.push_back(next);
            }
        }
    }
    vec![start, start]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dag(spec: &[(&str, &[&str])]) -> Result<Dag, Vec<GraphError>> {
        let owned: Vec<(String, Vec<String>)> =
            spec.iter().map(|(id, n)| (id.to_string(), n.iter().map(|s| s.to_string()).collect())).collect();
        Dag::build(owned.iter().map(|(i, n)| (i.as_str(), n.as_slice())))
    }

    #[test]
    fn every_cycle_is_reported_with_its_path() {
        let errs = dag(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"]), ("d", &["d"]), ("e", &[])]).unwrap_err();
        assert_eq!(errs, vec![GraphError::Cycle { path: vec![0, 1, 2, 0] }, GraphError::Cycle { path: vec![3, 3] }]);
    }

    #[test]
    fn unknown_need_suggests_nearest_id() {
        let errs = dag(&[("quiesce", &[]), ("break", &["quiesc"])]).unwrap_err();
        assert_eq!(
            errs,
            vec![GraphError::UnknownNeed { step: 1, need: "quiesc".into(), suggestion: Some("quiesce".into()) }]
        );
    }

    #[test]
    fn levels_and_critical_path() {
        let d = dag(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])]).unwrap();
        assert_eq!(d.levels(), vec![0, 1, 1, 2]);
        let weights = [1.0, 5.0, 2.0, 1.0];
        assert_eq!(d.critical_path(|i| weights[i]), (vec![0, 1, 3], 7.0));
        assert!(d.is_ancestor(0, 3) && !d.is_ancestor(2, 1));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Any DAG whose edges point backwards in file order builds, and its order respects
        /// every edge; adding one forward edge that closes a loop is reported as a cycle.
        #[test]
        fn random_dags_order_and_cycles(n in 2usize..40, edges in proptest::collection::vec((0usize..40, 0usize..40), 0..120)) {
            let mut needs: Vec<Vec<String>> = vec![vec![]; n];
            for (a, b) in edges {
                let (a, b) = (a % n, b % n);
                if a < b { needs[b].push(format!("s{a}")); }
            }
            let ids: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
            let d = Dag::build(ids.iter().map(String::as_str).zip(needs.iter().map(Vec::as_slice))).unwrap();
            let mut pos = vec![0; n];
            for (k, &i) in d.order.iter().enumerate() { pos[i] = k; }
            prop_assert_eq!(d.order.len(), n);
            for (i, ps) in d.parents.iter().enumerate() {
                for &p in ps { prop_assert!(pos[p] < pos[i]); prop_assert!(d.is_ancestor(p, i)); }
            }
            if let Some(p) = d.parents.iter().enumerate().find_map(|(i, ps)| ps.first().map(|&p| (p, i))) {
                needs[p.0].push(format!("s{}", p.1));
                let errs = Dag::build(ids.iter().map(String::as_str).zip(needs.iter().map(Vec::as_slice))).unwrap_err();
                let has_cycle = errs.iter().any(|e| matches!(e, GraphError::Cycle { .. }));
                prop_assert!(has_cycle, "closing a loop must be reported as a cycle");
            }
        }
    }
}
