//! `imctl bench --scenario tiers`: bytes per message on disk in each tier
//! and history page read latency from each, on a scratch store of the
//! embedded backend (nothing else needs to run).

use std::time::{Duration, Instant};

use im_events::{ConversationKind, Diffusion, MessageKind};
use im_store::sqlite::{Durability, SqliteConversationStore};
use im_store::{
    ConversationEffect, ConversationRecord, ConversationStore, Fence, StoredMessage, TieringPolicy,
};
use serde_json::json;

use crate::bench::Latencies;

pub struct TierFigures {
    pub messages: u64,
    pub hot_bytes_per_message: f64,
    pub cold_bytes_per_message: f64,
    pub hot_read: (Duration, Duration),
    pub cold_read: (Duration, Duration),
    pub archive_seconds: f64,
    pub page: usize,
}

/// Realistic chat text: varied words, ids and lengths.
fn body(seq: u64) -> serde_json::Value {
    const WORDS: [&str; 16] = [
        "ship", "release", "today", "review", "the", "build", "is", "green", "again", "after",
        "fixing", "flaky", "tests", "lunch", "meeting", "tomorrow",
    ];
    let length = 3 + (seq * 7 % 17) as usize;
    let text: Vec<&str> = (0..length)
        .map(|i| WORDS[((seq as usize).wrapping_mul(31) + i * 13) % WORDS.len()])
        .collect();
    json!({"text": format!("{} #{seq}", text.join(" "))})
}

fn reads(
    store: &dyn ConversationStore,
    conversations: u64,
    per: u64,
    page: usize,
    samples: usize,
) -> crate::Result<(Duration, Duration)> {
    let mut took = Vec::with_capacity(samples);
    for n in 0..samples as u64 {
        let conversation = format!("g:bench{}", n % conversations);
        let before = 1 + (n.wrapping_mul(2_654_435_761) % per);
        let started = Instant::now();
        let messages = store.history(&conversation, Some(before + 1), page)?;
        took.push(started.elapsed());
        crate::ensure_failed!(
            messages.last().map(|m| m.seq) == Some(before),
            "history returned the wrong page"
        );
    }
    let took: Latencies = took.into_iter().collect();
    Ok((
        took.quantile(0.5).unwrap_or_default(),
        took.quantile(0.99).unwrap_or_default(),
    ))
}

pub fn measure(messages: u64, page: usize) -> crate::Result<TierFigures> {
    let dir = tempfile::tempdir()?;
    let store = SqliteConversationStore::open_writer(
        &dir.path().join(im_store::sqlite::CONVERSATIONS_FILE),
        Durability::Normal,
    )?;
    let fence = Fence {
        scope: "bench".into(),
        partition: 0,
        epoch: 1,
    };
    let conversations = 10u64.min(messages.max(1));
    let per = (messages / conversations).max(1);
    let old = chrono::Utc::now().timestamp_millis() - 30 * 86_400_000;
    eprint!("tiers: writing {} messages", conversations * per);
    for c in 0..conversations {
        let id = format!("g:bench{c}");
        let mut effects = vec![ConversationEffect::PutConversation(ConversationRecord {
            conversation_id: id.clone(),
            kind: ConversationKind::Group,
            title: Some(format!("Bench {c}")),
            last_seq: per,
            diffusion: Diffusion::Write,
            member_count: 50,
            created_at: im_events::rfc3339_ms(old),
            history_visibility: im_events::HistoryVisibility::Shared,
        })];
        for seq in 1..=per {
            effects.push(ConversationEffect::InsertMessage(StoredMessage {
                conversation_id: id.clone(),
                seq,
                message_id: uuid::Uuid::new_v4().to_string(),
                sender_id: format!("user{}", (seq * 13 + c) % 50),
                source: format!("urn:im:device:user{}:phone", (seq * 13 + c) % 50),
                event_id: uuid::Uuid::new_v4().to_string(),
                sent_at: im_events::rfc3339_ms(old + seq as i64 * 1500),
                kind: MessageKind::Text,
                body: body(seq),
                mentions: vec![],
                edited_at: None,
                recalled_at: None,
                recalled_by: None,
                reply_to: None,
                reactions: vec![],
            }));
        }
        store.apply(&fence, &effects)?;
        eprint!(".");
    }
    eprintln!();
    let samples = 2000;
    let hot = store.tier_stats()?;
    eprintln!("tiers: reading {samples} pages of {page} from the hot tier");
    let hot_read = reads(&store, conversations, per, page, samples)?;
    let started = Instant::now();
    store.archive(
        &TieringPolicy {
            hot_window_ms: 86_400_000,
            ..TieringPolicy::default()
        },
        chrono::Utc::now().timestamp_millis(),
        &mut |report| eprint!("\rtiers: archived {} messages", report.moved),
    )?;
    eprintln!();
    let archive_seconds = started.elapsed().as_secs_f64();
    let cold = store.tier_stats()?;
    eprintln!("tiers: reading {samples} pages of {page} from the cold tier");
    let cold_read = reads(&store, conversations, per, page, samples)?;
    Ok(TierFigures {
        messages: conversations * per,
        hot_bytes_per_message: hot.hot_bytes as f64 / hot.hot_messages.max(1) as f64,
        cold_bytes_per_message: cold.cold_bytes as f64 / cold.cold_messages.max(1) as f64,
        hot_read,
        cold_read,
        archive_seconds,
        page,
    })
}

pub fn report(figures: &TierFigures, as_json: bool) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    if as_json {
        println!(
            "{}",
            json!({
                "scenario": "tiers", "messages": figures.messages, "page": figures.page,
                "hot_bytes_per_message": figures.hot_bytes_per_message,
                "cold_bytes_per_message": figures.cold_bytes_per_message,
                "hot_page_ms": {"p50": ms(figures.hot_read.0), "p99": ms(figures.hot_read.1)},
                "cold_page_ms": {"p50": ms(figures.cold_read.0), "p99": ms(figures.cold_read.1)},
                "archive_seconds": figures.archive_seconds,
            })
        );
        return;
    }
    println!(
        "scenario tiers: {} messages, pages of {}, archive took {:.2}s",
        figures.messages, figures.page, figures.archive_seconds
    );
    println!(
        "{:<6} {:>12} {:>14} {:>14}",
        "tier", "bytes/msg", "page p50 ms", "page p99 ms"
    );
    for (tier, bytes, (p50, p99)) in [
        ("hot", figures.hot_bytes_per_message, figures.hot_read),
        ("cold", figures.cold_bytes_per_message, figures.cold_read),
    ] {
        println!(
            "{tier:<6} {bytes:>12.1} {:>14.3} {:>14.3}",
            ms(p50),
            ms(p99)
        );
    }
    println!(
        "cold/hot size ratio {:.3}",
        figures.cold_bytes_per_message / figures.hot_bytes_per_message.max(1e-9)
    );
}
