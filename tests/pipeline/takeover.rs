//! Issue 11: a take-over must know every older consumer of its partition,
//! whatever JetStream's consumer listing answers. In a 3-node cluster, the
//! previous owner's consumer lives on a node that is down: its state cannot
//! be read, and `CONSUMER.LIST` answers without it ("Did not receive all
//! consumer info results"). A take-over that trusted that listing started
//! its consumer at a floor computed without it and never deleted it, so the
//! old consumer held its messages pending forever once the node came back.
//! The take-over now refuses to proceed until it can read that consumer, and
//! then starts exactly after its ack floor and removes it.

use std::time::Duration;

use futures::StreamExt;
use im_harness::NatsCluster;
use im_runtime::topology::{
    consumer_config, epoch_durable_name, stream_config, take_over_consumer, topology, TakeOverError,
};

async fn fetch(
    consumer: &async_nats::jetstream::consumer::PullConsumer,
    max: usize,
) -> Vec<async_nats::jetstream::Message> {
    // A consumer just made on a loaded 3-node cluster may deliver nothing
    // within one pull's expiry: pull again, for a while, until `max` came.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut messages = Vec::new();
    while messages.len() < max && tokio::time::Instant::now() < deadline {
        messages.extend(im_pipeline_tests::fetch_batch(consumer, max - messages.len()).await);
    }
    messages
}

async fn names(js: &async_nats::jetstream::Context) -> Vec<String> {
    let stream = js.get_stream("IM_DELIVERY").await.unwrap();
    let mut names: Vec<String> = stream
        .consumer_names()
        .filter_map(|n| async move { n.ok() })
        .collect()
        .await;
    names.sort();
    names
}

/// Retry an operation a fresh cluster (or one that just lost its meta
/// leader) refuses for a few seconds.
async fn patiently<T, E: std::fmt::Display, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(error) if tokio::time::Instant::now() < deadline => {
                eprintln!("{what}: {error}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => panic!("{what}: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_over_waits_for_an_older_consumer_it_cannot_read_and_never_orphans_it() {
    let mut cluster = NatsCluster::start(3).unwrap();
    let def = topology().consumer("unread").unwrap().clone();
    let delivery = topology()
        .streams
        .iter()
        .find(|s| s.name == "IM_DELIVERY")
        .unwrap()
        .clone();
    let client = im_runtime::config::connect(&cluster.urls(), "takeover-test")
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut config = stream_config(&delivery);
    config.num_replicas = 3;
    patiently("create IM_DELIVERY", || {
        js.get_or_create_stream(config.clone())
    })
    .await;
    for n in 1..=6 {
        patiently("publish", || async {
            js.publish(format!("im.delivery.5.message.{n}"), format!("{n}").into())
                .await?
                .await
        })
        .await;
    }
    // The previous owner (epoch 5) read through a consumer of one replica,
    // so that one node going down makes its state unreadable (the
    // pipeline's consumers are R3; one node down is not enough there, but
    // two are, and a listing times out on a node that is merely slow).
    let old_name = epoch_durable_name(&def, 5, 5);
    let mut old_config = consumer_config(&def, 5);
    old_config.durable_name = Some(old_name.clone());
    old_config.num_replicas = 1;
    let stream = js.get_stream("IM_DELIVERY").await.unwrap();
    let old = patiently("create the old owner's consumer", || {
        stream.create_consumer(old_config.clone())
    })
    .await;
    // It handled 1–4 in order.
    let handled = fetch(&old, 4).await;
    assert_eq!(handled.len(), 4);
    for message in handled {
        message.double_ack().await.unwrap();
    }
    let host = patiently("old consumer info", || stream.consumer_info(&old_name))
        .await
        .cluster
        .and_then(|c| c.leader)
        .expect("the consumer's node");
    let host = cluster.index_of(&host).expect("a node of ours");
    // Its node dies. Talk to the cluster through another node.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kill(host);
    let other = (host + 1) % 3;
    let client = async_nats::connect(cluster.url(other)).await.unwrap();
    let js = async_nats::jetstream::new(client);
    // The names are still known (the meta layer has them) ...
    let known = patiently("consumer names", || async {
        let stream = js.get_stream("IM_DELIVERY").await?;
        let names: Vec<String> = stream
            .consumer_names()
            .filter_map(|n| async move { n.ok() })
            .collect()
            .await;
        if names.is_empty() {
            return Err(anyhow::anyhow!("no meta leader yet"));
        }
        Ok::<_, anyhow::Error>(names)
    })
    .await;
    assert_eq!(known, std::slice::from_ref(&old_name));
    // ... but its ack floor cannot be read: the take-over must not go ahead.
    let attempt = take_over_consumer(&js, &def, 5, 9).await;
    match &attempt {
        Err(TakeOverError::Unavailable(reason)) => {
            assert!(reason.contains(&old_name), "{reason}")
        }
        Err(other) => panic!("unexpected refusal: {other}"),
        Ok(_) => panic!(
            "the take-over went ahead without the old owner's ack floor; consumers now: {:?}",
            names(&js).await
        ),
    }
    assert_eq!(
        names(&js).await,
        std::slice::from_ref(&old_name),
        "nothing was created on a partial view"
    );
    // The node comes back: the take-over now reads the floor, starts after
    // it, and fences the old consumer off.
    cluster.restart(host).unwrap();
    let new = patiently("take over", || take_over_consumer(&js, &def, 5, 9)).await;
    let mut first = fetch(&new, 2).await;
    // And nothing after them.
    first.extend(im_pipeline_tests::fetch_batch(&new, 10).await);
    let order: Vec<String> = first
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).to_string())
        .collect();
    assert_eq!(
        order,
        ["5", "6"],
        "starts right after the old owner's floor"
    );
    assert_eq!(
        names(&js).await,
        [epoch_durable_name(&def, 5, 9)],
        "no consumer is left behind"
    );
}
