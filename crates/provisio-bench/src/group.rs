//! `provisio-bench group`: a group operation (suspend) over N services of one invoice on S
//! servers of a slow local remote, beside the bound N·L/(S·C).

use std::time::Instant;

use provisio_core::page::PageRequest;
use provisio_core::service::{InvoiceRef, NewService, ServiceStatus};
use provisio_core::settings::Settings;
use provisio_core::text::Username;
use provisio_engine::groups::{GroupOp, GroupRequest};
use provisio_store::JobFilter;

use crate::setup::{cpu_note, cpu_secs};
use crate::slow_remote::SlowBench;

pub async fn run(
    n: usize,
    latency_ms: u64,
    servers: usize,
    concurrency: u32,
) -> anyhow::Result<()> {
    let b = SlowBench::start(latency_ms, servers, concurrency, "suspend", None).await?;
    let (engine, client, ids, product) = (&b.engine, b.client, &b.servers, b.product);
    let invoice = "bench-invoice";
    let sealed = engine.seal_secret(&secrecy::SecretString::from("bench-password-1"));
    let t0 = Instant::now();
    for i in 0..n {
        let new = NewService {
            order_key: None,
            external_id: None,
            client_id: client,
            product_id: product,
            server_id: ids[i % ids.len()],
            username: Username::parse(&format!("g{i}")).expect("valid"),
            password: sealed.clone(),
            status: ServiceStatus::Active,
            invoice: (i == 0).then(|| InvoiceRef::parse(invoice).expect("valid")),
            parent_invoice: (i > 0).then(|| InvoiceRef::parse(invoice).expect("valid")),
            settings: Settings::new(),
        };
        engine.store().insert_service_with_job(&new, None).await?;
    }
    let loaded = t0.elapsed().as_secs_f64();
    let worker = provisio_engine::worker::spawn(engine.clone(), provisio_server::worker_name());
    let t0 = Instant::now();
    let cpu0 = cpu_secs();
    // The whole group, a page of the largest size at a time, as the CLI does.
    let result = async {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = engine
                .group_operation(
                    invoice,
                    GroupOp::Suspend,
                    GroupRequest {
                        wait: Some(300),
                        limit: Some(provisio_engine::groups::GROUP_MAX_LIMIT),
                        after: after.take(),
                        ..Default::default()
                    },
                )
                .await?;
            all.extend(page.members);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok::<_, provisio_engine::EngineError>(all),
            }
        }
    }
    .await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_note(cpu0, secs);
    let queued_by = engine
        .store()
        .list_jobs(&JobFilter::default(), PageRequest::first(1))
        .await
        .ok()
        .and_then(|p| p.items.first().map(|j| j.created_at));
    if let Some(first) = queued_by {
        let last = engine
            .store()
            .list_jobs(
                &JobFilter::default(),
                PageRequest {
                    after: Some((n - 1) as i64),
                    limit: 1,
                },
            )
            .await?;
        if let Some(j) = last.items.first() {
            println!(
                "group  queueing took {:.2}s; last job finished {:.2}s after the first was queued",
                (j.created_at - first).num_milliseconds() as f64 / 1000.0,
                (j.finished_at.unwrap_or(j.updated_at) - first).num_milliseconds() as f64 / 1000.0
            );
        }
    }
    worker.shutdown().await;
    let result = result?;
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for m in &result {
        *outcomes.entry(m.outcome.clone()).or_default() += 1;
    }
    let bound = b.bound(n);
    println!(
        "group suspend of {n} services ({loaded:.1}s to load), {latency_ms} ms remote, {servers} servers x {concurrency} concurrent: {secs:.2}s, bound N*L/(S*C) = {bound:.2}s, ratio {:.3}; member results {outcomes:?}",
        secs / bound
    );
    println!("{}", b.held_line("group ", n, secs, &cpu));
    engine.store().close().await;
    Ok(())
}
