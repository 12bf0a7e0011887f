//! Click recording off the request path. A redirect adds its click to an in-memory buffer of
//! counts per link and hour; a background task writes the buffer in batches (every interval,
//! or sooner when it fills) into the hourly series and the links' totals. The buffer holds
//! counts, not clicks, so its size follows the number of busy links, not the traffic, and it
//! is bounded: when it holds its most links, a click of yet another link is dropped and
//! counted as dropped. A write that fails puts its counts back.

use std::collections::HashMap;
use std::sync::Mutex;

use metrics::Counter;
use pier_core::Timestamp;
use pier_db::{Db, JsonList, with_tx};
use tokio::sync::{Notify, watch};

use crate::link::LinkId;

/// Who followed a link, as far as its `User-Agent` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visitor {
    Browser,
    /// A crawler, a link-preview fetcher, a monitor: counted apart, never in totals.
    Bot,
    /// Anything else (command-line clients, apps, no header): counted as a person.
    Unknown,
}

/// Lowercase fragments that mark an automated client's user agent.
const BOT_MARKERS: &[&str] = &[
    "bot",
    "crawl",
    "spider",
    "slurp",
    "facebookexternalhit",
    "embedly",
    "preview",
    "headless",
    "lighthouse",
    "scrapy",
    "python-requests",
    "go-http-client",
    "whatsapp",
    "telegram",
    "discord",
    "slack",
    "monitor",
];

impl Visitor {
    /// Classifies by the first 512 bytes of the user agent, without allocating.
    pub fn classify(user_agent: Option<&str>) -> Self {
        let Some(agent) = user_agent else {
            return Self::Unknown;
        };
        let mut buf = [0u8; 512];
        let len = agent.len().min(buf.len());
        buf[..len].copy_from_slice(&agent.as_bytes()[..len]);
        buf[..len].make_ascii_lowercase();
        let lower = match std::str::from_utf8(&buf[..len]) {
            Ok(text) => text,
            // Cut inside a character: keep the whole ones.
            Err(e) => std::str::from_utf8(&buf[..e.valid_up_to()]).unwrap_or_default(),
        };
        if BOT_MARKERS.iter().any(|m| lower.contains(m)) {
            Self::Bot
        } else if lower.contains("mozilla/") {
            Self::Browser
        } else {
            Self::Unknown
        }
    }

    pub fn is_bot(self) -> bool {
        self == Self::Bot
    }
}

const HOUR_MICROS: i64 = 3_600_000_000;

/// Clicks of one link in one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct HourCounts {
    hour: i64,
    humans: i64,
    bots: i64,
    /// Human clicks already added to the link's total when they were let through (links with
    /// `max_clicks`), which the flush must not add again.
    counted: i64,
}

impl HourCounts {
    fn add(&mut self, other: &Self) {
        self.humans += other.humans;
        self.bots += other.bots;
        self.counted += other.counted;
    }
}

/// The buffer's limits.
#[derive(Debug, Clone, Copy)]
pub struct ClickSettings {
    /// Links the buffer holds counts for at most; clicks of further links are dropped.
    pub max_links: usize,
    /// Links at which the flusher writes without waiting for its interval, and the most one
    /// transaction writes.
    pub batch_links: usize,
    pub flush_every: std::time::Duration,
}

impl Default for ClickSettings {
    fn default() -> Self {
        Self {
            max_links: 100_000,
            batch_links: 10_000,
            flush_every: std::time::Duration::from_secs(1),
        }
    }
}

/// Clicks waiting to be written; see the module documentation.
#[derive(Debug)]
pub struct ClickBuffer {
    pending: Mutex<HashMap<String, Vec<HourCounts>>>,
    settings: ClickSettings,
    full: Notify,
    buffered: Counter,
    flushed: Counter,
    dropped: Counter,
}

impl ClickBuffer {
    pub fn new(settings: ClickSettings) -> Self {
        Self {
            pending: Mutex::default(),
            settings,
            full: Notify::new(),
            buffered: metrics::counter!("pier_links_clicks_buffered_total"),
            flushed: metrics::counter!("pier_links_clicks_flushed_total"),
            dropped: metrics::counter!("pier_links_clicks_dropped_total"),
        }
    }

    /// Adds a click; `counted` when the link's total already includes it.
    pub(crate) fn record(&self, link: &LinkId, at: Timestamp, visitor: Visitor, counted: bool) {
        let hour = at.as_micros() - at.as_micros().rem_euclid(HOUR_MICROS);
        let human = i64::from(!visitor.is_bot());
        let click = HourCounts {
            hour,
            humans: human,
            bots: 1 - human,
            counted: i64::from(counted && human == 1),
        };
        let links = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(hours) = pending.get_mut(link.as_str()) {
                merge(hours, &click);
            } else if pending.len() < self.settings.max_links {
                pending.insert(link.as_str().to_owned(), vec![click]);
            } else {
                drop(pending);
                self.dropped.increment(1);
                return;
            }
            pending.len()
        };
        self.buffered.increment(1);
        if links == self.settings.batch_links {
            self.full.notify_one();
        }
    }

    /// Clicks waiting, humans and bots.
    pub fn pending_clicks(&self) -> i64 {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.values().flatten().map(|c| c.humans + c.bots).sum()
    }

    fn take(&self) -> Vec<(String, Vec<HourCounts>)> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *pending).into_iter().collect()
    }

    /// Puts counts whose write failed back, within the bound.
    fn put_back(&self, batch: Vec<(String, Vec<HourCounts>)>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (link, hours) in batch {
            if let Some(existing) = pending.get_mut(&link) {
                hours.iter().for_each(|h| merge(existing, h));
            } else if pending.len() < self.settings.max_links {
                pending.insert(link, hours);
            } else {
                let lost: i64 = hours.iter().map(|h| h.humans + h.bots).sum();
                self.dropped.increment(u64::try_from(lost).unwrap_or(0));
            }
        }
    }

    /// Writes every buffered click, [`ClickSettings::batch_links`] links per transaction, and
    /// returns how many clicks were written. Clicks of links deleted meanwhile are discarded.
    pub async fn flush(&self, db: &Db) -> Result<usize, sqlx::Error> {
        let mut taken = self.take();
        let mut written = 0;
        while !taken.is_empty() {
            let rest = taken.split_off(taken.len().min(self.settings.batch_links));
            let batch = std::mem::replace(&mut taken, rest);
            match write(db, &batch).await {
                Ok(clicks) => written += clicks,
                Err(err) => {
                    self.put_back(batch);
                    self.put_back(taken);
                    return Err(err);
                }
            }
        }
        self.flushed.increment(written as u64);
        Ok(written)
    }

    /// Flushes every [`ClickSettings::flush_every`], or sooner when the buffer fills, until
    /// `stop`; the caller flushes once more after the last request.
    pub async fn run(&self, db: &Db, mut stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(self.settings.flush_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = self.full.notified() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            if let Err(err) = self.flush(db).await {
                tracing::warn!(error = %err, "could not record clicks; will retry");
            }
        }
    }
}

fn merge(hours: &mut Vec<HourCounts>, click: &HourCounts) {
    match hours.iter_mut().find(|h| h.hour == click.hour) {
        Some(existing) => existing.add(click),
        None => hours.push(*click),
    }
}

/// One transaction: the hourly rows, then the links' totals.
async fn write(db: &Db, batch: &[(String, Vec<HourCounts>)]) -> Result<usize, sqlx::Error> {
    let mut hourly = Vec::new();
    let mut totals = Vec::new();
    let mut clicks = 0;
    for (link, hours) in batch {
        let mut uncounted = 0;
        for h in hours {
            hourly.push((link.as_str(), h.hour, h.humans, h.bots));
            uncounted += h.humans - h.counted;
            clicks += usize::try_from(h.humans + h.bots).unwrap_or(0);
        }
        if uncounted > 0 {
            totals.push((link.as_str(), uncounted));
        }
    }
    let (hourly, totals) = (JsonList::new(&hourly)?, JsonList::new(&totals)?);
    let rows = db.backend().json_rows("$1");
    let upsert = format!(
        "INSERT INTO link_clicks_hourly (link_id, hour, humans, bots) \
         SELECT k.link_id, k.hour, k.humans, k.bots FROM (SELECT value ->> 0 AS link_id, \
         CAST(value ->> 1 AS BIGINT) AS hour, CAST(value ->> 2 AS BIGINT) AS humans, \
         CAST(value ->> 3 AS BIGINT) AS bots FROM {rows}) AS k \
         WHERE EXISTS (SELECT 1 FROM links WHERE links.id = k.link_id) \
         ON CONFLICT (link_id, hour) DO UPDATE SET \
         humans = link_clicks_hourly.humans + excluded.humans, \
         bots = link_clicks_hourly.bots + excluded.bots"
    );
    let add = format!(
        "UPDATE links SET clicks = clicks + k.n FROM (SELECT value ->> 0 AS link_id, \
         CAST(value ->> 1 AS BIGINT) AS n FROM {rows}) AS k WHERE links.id = k.link_id"
    );
    // Relaxed: a crash of the machine may lose the last second of counts, never a link.
    let mut tx = db.begin_relaxed().await?;
    for (sql, list) in [(&upsert, &hourly), (&add, &totals)] {
        with_tx!(&mut tx, conn => {
            sqlx::query(sql)
                .bind(list.as_str())
                .persistent(false)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
    }
    tx.commit().await?;
    Ok(clicks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_are_classified() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                      Chrome/120.0 Safari/537.36";
        assert_eq!(Visitor::classify(Some(chrome)), Visitor::Browser);
        for bot in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
            "facebookexternalhit/1.1",
            "Mozilla/5.0 HeadlessChrome/120.0",
        ] {
            assert_eq!(Visitor::classify(Some(bot)), Visitor::Bot, "{bot}");
        }
        assert_eq!(Visitor::classify(Some("curl/8.5.0")), Visitor::Unknown);
        assert_eq!(Visitor::classify(None), Visitor::Unknown);
        // A long agent cut inside a multibyte character still classifies.
        let long = format!("{}é bot", "x".repeat(511));
        assert_eq!(Visitor::classify(Some(&long)), Visitor::Unknown);
    }

    #[test]
    fn the_buffer_keeps_counts_per_link_and_hour_and_is_bounded() {
        let buffer = ClickBuffer::new(ClickSettings {
            max_links: 2,
            ..ClickSettings::default()
        });
        let at = Timestamp::from_micros(10 * HOUR_MICROS + 5);
        let next_hour = Timestamp::from_micros(11 * HOUR_MICROS);
        let [a, b, c] = ["a", "b", "c"].map(|s| LinkId::from_trusted(format!("link_{s}")));
        buffer.record(&a, at, Visitor::Browser, false);
        buffer.record(&a, at, Visitor::Bot, false);
        buffer.record(&a, next_hour, Visitor::Unknown, true);
        buffer.record(&b, at, Visitor::Browser, false);
        buffer.record(&c, at, Visitor::Browser, false);
        assert_eq!(
            buffer.pending_clicks(),
            4,
            "the third link's click is dropped"
        );
        let mut taken = buffer.take();
        taken.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(taken[0].0, "link_a");
        assert_eq!(
            taken[0].1,
            vec![
                HourCounts {
                    hour: 10 * HOUR_MICROS,
                    humans: 1,
                    bots: 1,
                    counted: 0
                },
                HourCounts {
                    hour: 11 * HOUR_MICROS,
                    humans: 1,
                    bots: 0,
                    counted: 1
                },
            ]
        );
        assert_eq!(buffer.pending_clicks(), 0);
        buffer.put_back(taken);
        assert_eq!(buffer.pending_clicks(), 4);
    }
}
