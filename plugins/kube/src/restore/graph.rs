//! Restore order as a graph, not a list. Each object waits for what must exist before it:
//! kinds are ranked as Velero orders them (CRDs, namespaces, storage, RBAC, configuration,
//! services, workloads, ingresses, custom resources), but the ranks hold *per namespace* — the
//! Deployments of one namespace never wait for the Secrets of another — with cluster-scoped
//! ranks ahead of the namespaced ones that need them. Runbook-declared edges come on top.
//! Objects with no path between them go concurrently.
//!
//! Rank order is expressed through barrier nodes (one per namespace and rank), so the graph
//! has O(objects) edges however many objects share a rank.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// Where a group-resource goes in the order.
pub fn rank(resource: &str) -> u8 {
    let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
    match (plural, group) {
        ("customresourcedefinitions", _) => 0,
        ("namespaces", "") => 1,
        ("storageclasses", "storage.k8s.io") | ("ingressclasses", "networking.k8s.io") | ("priorityclasses", _) => 2,
        ("volumesnapshotclasses" | "volumesnapshotcontents" | "volumesnapshots", "snapshot.storage.k8s.io") => 3,
        ("persistentvolumes", "") => 4,
        ("persistentvolumeclaims", "") => 5,
        ("clusterroles" | "roles", "rbac.authorization.k8s.io") => 6,
        ("serviceaccounts", "") => 7,
        ("clusterrolebindings" | "rolebindings", "rbac.authorization.k8s.io") => 8,
        ("secrets" | "configmaps" | "limitranges" | "resourcequotas", "") => 9,
        ("services", "") => 10,
        ("pods" | "replicationcontrollers", "")
        | ("deployments" | "statefulsets" | "daemonsets" | "replicasets", "apps")
        | ("jobs" | "cronjobs", "batch") => 11,
        ("ingresses", "networking.k8s.io") => 12,
        (_, "") => 13,
        (_, g) if g.ends_with(".k8s.io") || !g.contains('.') => 13,
        _ => 14,
    }
}

/// What the graph needs to know of an object.
pub struct Placed<'a> {
    pub resource: &'a str,
    /// None for cluster-scoped objects.
    pub namespace: Option<&'a str>,
}

/// A dependency graph over objects `0..objects` plus barrier nodes.
#[derive(Debug)]
pub struct Graph {
    objects: usize,
    waits_on: Vec<usize>,
    dependents: Vec<Vec<usize>>,
}

impl Graph {
    /// The rank graph of these objects, plus `edges` (before, after) between objects.
    pub fn build(placed: &[Placed], edges: &[(usize, usize)]) -> Graph {
        let n = placed.len();
        // (scope, rank) → objects; scope "" is the cluster.
        let mut groups: BTreeMap<(&str, u8), Vec<usize>> = BTreeMap::new();
        for (i, p) in placed.iter().enumerate() {
            groups.entry((p.namespace.unwrap_or(""), rank(p.resource))).or_default().push(i);
        }
        let mut g = Graph { objects: n, waits_on: vec![0; n], dependents: vec![vec![]; n] };
        // Barrier of each (scope, rank): done when its objects and the scope's previous barrier are.
        let mut barrier: BTreeMap<(&str, u8), usize> = BTreeMap::new();
        let mut last_in_scope: BTreeMap<&str, usize> = BTreeMap::new();
        for ((scope, r), members) in &groups {
            let b = g.add_node();
            for &m in members {
                g.edge(m, b);
            }
            if let Some(&prev) = last_in_scope.get(scope) {
                g.edge(prev, b);
            }
            last_in_scope.insert(scope, b);
            barrier.insert((scope, *r), b);
        }
        let before = |scope: &str, r: u8| barrier.range((scope, 0)..(scope, r)).next_back().map(|(_, &b)| b);
        for (i, p) in placed.iter().enumerate() {
            let r = rank(p.resource);
            let mut waits = vec![before("", r)];
            if let Some(ns) = p.namespace {
                waits.push(before(ns, r));
            }
            for b in waits.into_iter().flatten() {
                g.edge(b, i);
            }
        }
        for &(a, b) in edges {
            g.edge(a, b);
        }
        g
    }

    fn add_node(&mut self) -> usize {
        self.waits_on.push(0);
        self.dependents.push(vec![]);
        self.waits_on.len() - 1
    }

    fn edge(&mut self, before: usize, after: usize) {
        self.dependents[before].push(after);
        self.waits_on[after] += 1;
    }

    /// The objects in a cycle of declared edges, if any (then nothing should run).
    pub fn cycle(&self) -> Option<Vec<usize>> {
        let mut left = self.waits_on.clone();
        let mut queue: VecDeque<usize> = (0..left.len()).filter(|&i| left[i] == 0).collect();
        let mut seen = 0;
        while let Some(i) = queue.pop_front() {
            seen += 1;
            for &d in &self.dependents[i] {
                left[d] -= 1;
                if left[d] == 0 {
                    queue.push_back(d);
                }
            }
        }
        (seen < left.len()).then(|| (0..self.objects).filter(|&i| left[i] > 0).collect())
    }

    /// Run `each` for every object once all it waits on finished (successfully or not), at
    /// most `width()` at a time (asked again as each finishes). `each` returns false to stop
    /// scheduling new objects.
    pub async fn run<W, F, Fut>(&self, width: W, each: F)
    where
        W: Fn() -> usize,
        F: Fn(usize) -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut left = self.waits_on.clone();
        let mut ready: VecDeque<usize> = VecDeque::new();
        let settle = |i: usize, left: &mut Vec<usize>, ready: &mut VecDeque<usize>| {
            let mut stack = vec![i];
            while let Some(j) = stack.pop() {
                for &d in &self.dependents[j] {
                    left[d] -= 1;
                    if left[d] == 0 {
                        if d < self.objects { ready.push_back(d) } else { stack.push(d) }
                    }
                }
            }
        };
        for i in 0..left.len() {
            if left[i] == 0 {
                if i < self.objects {
                    ready.push_back(i);
                } else {
                    settle(i, &mut left, &mut ready);
                }
            }
        }
        let mut running = FuturesUnordered::new();
        let mut stopping = false;
        loop {
            while !stopping && running.len() < width().max(1) {
                let Some(i) = ready.pop_front() else { break };
                let fut = each(i);
                running.push(async move { (i, fut.await) });
            }
            let Some((i, go_on)) = running.next().await else { break };
            stopping |= !go_on;
            settle(i, &mut left, &mut ready);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn kinds_rank_as_velero_orders_them() {
        let order = [
            "customresourcedefinitions.apiextensions.k8s.io",
            "namespaces",
            "persistentvolumes",
            "persistentvolumeclaims",
            "serviceaccounts",
            "secrets",
            "services",
            "deployments.apps",
            "ingresses.networking.k8s.io",
            "carts.shop.example.com",
        ];
        let ranks: Vec<u8> = order.iter().map(|r| rank(r)).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
    }

    #[tokio::test]
    async fn ranks_hold_per_namespace_and_declared_edges_on_top() {
        let placed = [
            Placed { resource: "deployments.apps", namespace: Some("a") }, // 0
            Placed { resource: "configmaps", namespace: Some("a") },       // 1
            Placed { resource: "namespaces", namespace: None },            // 2
            Placed { resource: "deployments.apps", namespace: Some("b") }, // 3
            Placed { resource: "services", namespace: Some("b") },         // 4
        ];
        let g = Graph::build(&placed, &[(0, 4)]);
        assert!(g.cycle().is_none());
        let order = Mutex::new(vec![]);
        g.run(
            || 1,
            |i| {
                order.lock().unwrap().push(i);
                async { true }
            },
        )
        .await;
        let order = order.into_inner().unwrap();
        let at = |i| order.iter().position(|&x| x == i).unwrap();
        assert_eq!(order.len(), 5);
        assert!(at(2) < at(1) && at(1) < at(0), "namespace, config, deployment: {order:?}");
        assert!(at(0) < at(4) && at(4) < at(3), "declared edge and rank: {order:?}");

        let looped = Graph::build(&placed, &[(0, 1)]);
        assert_eq!(looped.cycle(), Some(vec![0, 1]));
    }
}
