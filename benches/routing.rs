//! Micro-benchmarks of the request path's pure parts: route lookup and
//! instance selection.
//!
//! `cargo bench -p switchyard --bench routing`

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard_proxy::config::{Balance, RouteConfig};
use switchyard_proxy::metrics::Metrics;
use switchyard_proxy::routing::{InstanceSpec, PoolSpec, Router, ServiceSnapshot};
use switchyard_proxy::upstream::PoolSettings;

fn pool(colour: &str, first_port: u16, n: u16) -> PoolSpec {
    PoolSpec {
        colour: colour.into(),
        version: "v1".into(),
        instances: (0..n)
            .map(|i| InstanceSpec {
                addr: SocketAddr::from(([127, 0, 0, 1], first_port + i)),
                id: None,
                version: Some("v1".into()),
            })
            .collect(),
    }
}

/// A router with `services` services, each behind a host route and a
/// path route, plus a catch-all, each with `instances` per colour.
fn router(services: usize, instances: u16) -> Router {
    let names: Vec<String> = (0..services).map(|i| format!("svc{i}")).collect();
    let mut routes = Vec::new();
    for n in &names {
        routes.push(RouteConfig {
            host: Some(format!("{n}.example")),
            path_prefix: String::new(),
            service: n.clone(),
        });
        routes.push(RouteConfig {
            host: None,
            path_prefix: format!("/{n}"),
            service: n.clone(),
        });
    }
    routes.push(RouteConfig {
        host: None,
        path_prefix: String::new(),
        service: names[0].clone(),
    });
    routes.sort_by(|a, b| {
        b.host
            .is_some()
            .cmp(&a.host.is_some())
            .then(b.path_prefix.len().cmp(&a.path_prefix.len()))
    });
    let balances: Vec<_> = names.iter().map(|n| (n.clone(), Balance::P2c)).collect();
    let r = Router::new(
        routes,
        &balances,
        PoolSettings::default(),
        Duration::from_secs(30),
        Arc::new(Metrics::new()),
    );
    for (i, n) in names.iter().enumerate() {
        let base = 10_000 + (i as u16) * 100;
        r.apply(ServiceSnapshot {
            name: n.clone(),
            active: pool("blue", base, instances),
            standby: pool("green", base + 50, instances),
            generation: 1,
            decided_by: "bench",
            ..ServiceSnapshot::default()
        });
    }
    r
}

fn lookup(c: &mut Criterion) {
    let small = router(1, 2);
    c.bench_function("lookup: 1 service, catch-all", |b| {
        b.iter(|| {
            let t = small.table();
            black_box(
                t.lookup(black_box("localhost:8080"), black_box("/hello"))
                    .is_some(),
            )
        })
    });
    let big = router(50, 4);
    c.bench_function("lookup: 50 services, host match", |b| {
        b.iter(|| {
            let t = big.table();
            black_box(
                t.lookup(black_box("svc37.example"), black_box("/x"))
                    .is_some(),
            )
        })
    });
    c.bench_function("lookup: 50 services, path match", |b| {
        b.iter(|| {
            let t = big.table();
            black_box(
                t.lookup(black_box("other"), black_box("/svc37/a/b"))
                    .is_some(),
            )
        })
    });
}

fn selection(c: &mut Criterion) {
    for n in [2u16, 16] {
        let r = router(1, n);
        let table = r.table_full();
        let Some(svc) = table.service("svc0") else {
            return;
        };
        let pool = Arc::clone(&svc.active);
        c.bench_function(&format!("pick p2c: {n} instances"), |b| {
            b.iter(|| black_box(pool.pick(Balance::P2c, &[]).is_some()))
        });
        c.bench_function(&format!("pick round robin: {n} instances"), |b| {
            b.iter(|| black_box(pool.pick(Balance::RoundRobin, &[]).is_some()))
        });
        let tried = [pool.endpoints[0].addr()];
        c.bench_function(&format!("pick p2c, one tried: {n} instances"), |b| {
            b.iter(|| black_box(pool.pick(Balance::P2c, black_box(&tried)).is_some()))
        });
    }
}

criterion_group!(benches, lookup, selection);
criterion_main!(benches);
