//! One pick (and its release) by each balancer over 10 and over 10,000 instances: the cost must
//! not depend on the count (each strategy chooses in constant time).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sextant::client::{Instance, ServiceView, Strategy};

fn view(count: usize) -> ServiceView {
    let instances = (0..count)
        .map(|i| Instance {
            id: format!("web-{i}"),
            service: "web".into(),
            address: format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
            port: 8080,
            tags: vec![],
            meta: Default::default(),
            weight: 1 + (i % 7) as u32,
        })
        .collect();
    ServiceView::fixed("web", instances)
}

fn picks(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for count in [10, 10_000] {
        let view = view(count);
        for strategy in Strategy::ALL {
            let balancer = view.balancer(strategy);
            // Some requests held, so the load-aware strategies have counts to compare.
            let held: Vec<_> = (0..count / 2).map(|_| balancer.pick().unwrap()).collect();
            group.bench_with_input(
                BenchmarkId::new(format!("{strategy:?}"), count),
                &balancer,
                |b, balancer| b.iter(|| black_box(balancer.pick().unwrap())),
            );
            drop(held);
        }
    }
    group.finish();
}

criterion_group!(benches, picks);
criterion_main!(benches);
