//! Live heap bytes per Route at each stage of a standalone load (`cap`'s counting allocator
//! around the system allocator): `cargo run --release -p weir-controller --example
//! memprobe -- 10000`. Writes the bench's route files (1000 Routes per file) to a temp dir.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, missing_docs)]

use std::sync::Arc;

use cap::Cap;

#[global_allocator]
static GLOBAL: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

fn live() -> isize {
    isize::try_from(GLOBAL.allocated()).unwrap()
}

/// This process's minor page faults so far (`/proc/self/stat`, field 10).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    after_name.split_whitespace().nth(7).and_then(|f| f.parse().ok()).unwrap_or(0)
}

fn main() {
    let n: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("weir-memprobe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("00-backend.yaml"), "apiVersion: v1\nkind: Service\nmetadata:\n  name: upstream\nspec:\n  ports:\n    - {name: http, port: 80, targetPort: 8080}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: upstream-local\n  labels:\n    kubernetes.io/service-name: upstream\naddressType: IPv4\nports:\n  - {name: http, port: 8080}\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions: {ready: true}\n").unwrap();
    for f in 0..n.div_ceil(1000) {
        let mut text = String::new();
        for i in f * 1000..((f + 1) * 1000).min(n) {
            text.push_str(&format!("---\napiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata:\n  name: r{i}\nspec:\n  rules:\n    - matches:\n        - path: {{type: Prefix, value: /r{i}}}\n      backends:\n        - {{service: upstream, port: 80}}\n"));
        }
        std::fs::write(dir.join(format!("routes-{f:05}.yaml")), text).unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let base = live();
        let per = |b: isize| b as f64 / n as f64;
        let mut source = weir_controller::standalone::DirSource::new(&dir, "weir-system");
        let (_, errors) = source.load();
        assert!(errors.is_empty(), "{errors:?}");
        let after_load = live();
        println!("routes: {n}");
        println!("source (index, caches) after load:     {:8.0} B/route", per(after_load - base));
        // What the source holds, in parts: the Route objects themselves (a deep copy of
        // each), the index's maps (a second copy of the maps shares the objects).
        let t = live();
        let copies: Vec<weir_controller::index::RouteObject> = source
            .index()
            .routes
            .values()
            .map(|r| weir_controller::index::RouteObject::clone(r))
            .collect();
        let objects = live() - t;
        drop(copies);
        let t = live();
        let maps = source.index().routes.clone();
        let index_map = live() - t;
        drop(maps);
        println!("  Route objects (RouteObject contents): {:8.0} B/route", per(objects));
        println!("  index map (keys, nodes):              {:8.0} B/route", per(index_map));
        println!(
            "  rest (defs, files, dups):             {:8.0} B/route",
            per(after_load - base - objects - index_map)
        );

        // The compile alone, part by part (each part dropped in turn: what it frees is
        // what it alone holds; shared objects are charged to the last holder).
        let t = live();
        let compiled = weir_controller::compile::compile(
            source.index(),
            &weir_controller::compile::Memory::default(),
        );
        let compile_total = live() - t;
        println!("compile (Compiled alone):              {:8.0} B/route", per(compile_total));
        for (name, part) in compiled.into_parts() {
            let t = live();
            drop(part);
            println!("  {name:<36}  {:8.0} B/route", per(t - live()));
        }

        let shared =
            weir_controller::publish::Shared::new(weir_dataplane::server::DataPlane::new());
        let mut publisher = weir_controller::publish::Publisher::new(Arc::clone(&shared));
        let before_apply = live();
        publisher.apply(source.index(), errors);
        let after_apply = live();
        println!(
            "apply (compile, publish, status view): {:8.0} B/route",
            per(after_apply - before_apply)
        );
        println!(
            "  of which status view and publish:    {:8.0} B/route",
            per(after_apply - before_apply - compile_total)
        );
        println!("total retained:                        {:8.0} B/route", per(after_apply - base));
        // Wall clock of a full compile (the best of five: the machine may be busy), and the
        // minor page faults it took (the allocator growing the heap).
        let mut best = std::time::Duration::MAX;
        let mut faults = u64::MAX;
        for _ in 0..5 {
            let (f, t) = (minor_faults(), std::time::Instant::now());
            let c = weir_controller::compile::compile(
                source.index(),
                &weir_controller::compile::Memory::default(),
            );
            best = best.min(t.elapsed());
            faults = faults.min(minor_faults() - f);
            drop(c);
        }
        println!(
            "full compile (best of 5):              {:8.1} ms, {faults} minor page faults",
            best.as_secs_f64() * 1e3
        );
        println!(
            "size_of RouteObject {} RouteSpec {} ObjectMeta {} ObjectRef {} RouteModel {} Rule {}",
            std::mem::size_of::<weir_controller::index::RouteObject>(),
            std::mem::size_of::<weir_crds::RouteSpec>(),
            std::mem::size_of::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(),
            std::mem::size_of::<weir_controller::index::ObjectRef>(),
            std::mem::size_of::<weir_dataplane::RouteModel>(),
            std::mem::size_of::<weir_dataplane::snapshot::Rule>(),
        );
    });
    std::fs::remove_dir_all(&dir).unwrap();
}
