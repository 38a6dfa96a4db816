//! An instance's routes (keepalived's `virtual_routes`): added once its VIPs are, while it is
//! master; removed before its VIPs when it leaves master. A route deleted by someone else, or
//! one that could not be added (its gateway not reachable yet, its interface missing), is added
//! again: at once on a route or address event, else every [`RETRY_US`] until it is there.
//! keepalived instead leaves master and comes back, a state flap, for a deleted route.

use super::*;
use crate::config::Route;

/// Between two attempts to add the routes of an instance whose routes failed.
pub(super) const RETRY_US: u64 = 1_000_000;

impl Shell {
    /// Adds (or re-asserts: adding replaces) every route of master instance `key`, through
    /// the netlink task ([`Shell::on_routes_added`] takes the result).
    pub(super) fn add_routes(&mut self, key: InstanceKey) {
        let Some(routes) = self.routes.get(&key).filter(|r| !r.is_empty()) else {
            return;
        };
        let routes = routes.clone();
        self.net.push(NetOp::AddRoutes { key, routes });
    }

    /// How adding the routes of `key` went: a failure is logged once per episode and retried.
    pub(super) fn on_routes_added(
        &mut self,
        key: InstanceKey,
        routes: &[Route],
        results: Vec<std::io::Result<()>>,
    ) {
        let mut failed = false;
        for (route, result) in routes.iter().zip(results) {
            match result {
                Ok(()) => debug!(vrid = key.vrid, %route, "route added"),
                Err(err) => {
                    failed = true;
                    if !self.route_retry.contains_key(&key) {
                        warn!(vrid = key.vrid, %route, error = %err, retry_ms = RETRY_US / 1_000,
                            "cannot add route; tried again while the instance is master");
                    }
                }
            }
        }
        if failed {
            self.route_retry.insert(key, now().plus(RETRY_US));
        } else if self.route_retry.remove(&key).is_some() {
            info!(vrid = key.vrid, "routes added after a failure");
        }
    }

    /// Removes every route of instance `key` (leaving master), through the netlink task.
    pub(super) fn remove_routes(&mut self, key: InstanceKey) {
        self.route_retry.remove(&key);
        let Some(routes) = self.routes.get(&key).filter(|r| !r.is_empty()) else {
            return;
        };
        let routes = routes.clone();
        self.net.push(NetOp::RemoveRoutes {
            key,
            routes,
            dropped: false,
        });
    }

    /// Removes every route of instance `key` now (stopping: the netlink task is drained).
    pub(super) async fn remove_routes_now(&mut self, key: InstanceKey) {
        self.route_retry.remove(&key);
        let Some(routes) = self.routes.get(&key) else {
            return;
        };
        let mut results = Vec::with_capacity(routes.len());
        for route in routes {
            results.push(self.addresses.remove_route(route).await);
        }
        Self::on_routes_removed(key, routes, false, results);
    }

    /// How removing routes of `key` went.
    pub(super) fn on_routes_removed(
        key: InstanceKey,
        routes: &[Route],
        dropped: bool,
        results: Vec<std::io::Result<()>>,
    ) {
        for (route, result) in routes.iter().zip(results) {
            match result {
                Ok(()) if dropped => {
                    info!(vrid = key.vrid, %route, "removed a route the configuration no longer has")
                }
                Ok(()) => {}
                Err(err) => warn!(vrid = key.vrid, %route, error = %err, "cannot remove route"),
            }
        }
    }

    /// Removes the routes of instance `key` leaving master, or, while stopping, keeps them
    /// until a successor advertises (with the VIPs).
    pub(super) fn remove_or_defer_routes(&mut self, key: InstanceKey) {
        if self.deferred.is_some() {
            self.deferred_routes.push(key);
        } else {
            self.remove_routes(key);
        }
    }

    /// The master instances that have routes.
    fn routed_masters(&self, engine: &Engine) -> Vec<InstanceKey> {
        engine
            .masters()
            .map(|(key, _)| key)
            .filter(|key| self.routes.get(key).is_some_and(|r| !r.is_empty()))
            .collect()
    }

    /// A static route left a table: a master's route there is added again.
    pub(super) fn on_route_gone(
        &mut self,
        engine: &Engine,
        (to, prefix, table): (IpAddr, u8, u32),
    ) {
        for key in self.routed_masters(engine) {
            let ours = self.routes[&key]
                .iter()
                .any(|r| (r.to, r.prefix, r.table()) == (to, prefix, table));
            if ours {
                warn!(vrid = key.vrid, to = %to, prefix, table, "route deleted by someone else; adding it again");
                self.add_routes(key);
            }
        }
    }

    /// Retries the routes whose retry is due (of instances still master). The next try is
    /// scheduled at once (a slow answer is not asked again meanwhile); success cancels it.
    pub(super) fn retry_routes(&mut self, engine: &Engine) {
        if self.route_retry.is_empty() {
            return;
        }
        let t = now();
        let masters: HashSet<InstanceKey> = engine.masters().map(|(k, _)| k).collect();
        self.route_retry.retain(|k, _| masters.contains(k));
        let due: Vec<InstanceKey> = self
            .route_retry
            .iter()
            .filter(|(_, at)| **at <= t)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.route_retry.insert(key, t.plus(RETRY_US));
            self.add_routes(key);
        }
    }

    /// When the next route retry is due.
    pub(super) fn next_route_retry(&self) -> Option<Time> {
        self.route_retry.values().min().copied()
    }

    /// After a reload: each master instance's routes that the new configuration no longer has
    /// are removed, and its routes re-asserted.
    pub(super) fn rerouted(&mut self, engine: &Engine, old: HashMap<InstanceKey, Vec<Route>>) {
        let masters: HashSet<InstanceKey> = engine.masters().map(|(k, _)| k).collect();
        for (key, routes) in old {
            if !masters.contains(&key) {
                continue;
            }
            let kept = self.routes.get(&key).cloned().unwrap_or_default();
            let gone: Vec<Route> = routes.into_iter().filter(|r| !kept.contains(r)).collect();
            if !gone.is_empty() {
                self.net.push(NetOp::RemoveRoutes {
                    key,
                    routes: gone,
                    dropped: true,
                });
            }
        }
        for key in masters {
            self.add_routes(key);
        }
    }
}
