//! Click recording off the request path. A redirect adds its click to an in-memory buffer of
//! counts per link: visits per hour (humans and bots apart), and per day the visitors (for the
//! unique-visitor estimate) and referring hosts, plus the latest few clicks. A background task
//! writes the buffer in batches (every interval, or sooner when it fills; see
//! [`crate::flush`]). The buffer holds counts, not clicks, so its size follows the number of
//! busy links, not the traffic, and it is bounded: at most a few KiB per link, and when it
//! holds its most links, a click of yet another link is dropped and counted as dropped. A
//! write that fails puts its counts back.

use std::collections::HashMap;
use std::sync::Mutex;

use metrics::Counter;
use pier_core::{Timestamp, WorkspaceId};
use pier_db::Db;
use tokio::sync::{Notify, watch};

use crate::geo::Country;
use crate::link::LinkId;
use crate::sketch::Sketch;

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

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Browser => "browser",
            Self::Bot => "bot",
            Self::Unknown => "unknown",
        }
    }
}

impl std::str::FromStr for Visitor {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        [Self::Browser, Self::Bot, Self::Unknown]
            .into_iter()
            .find(|v| v.as_str() == text)
            .ok_or_else(|| format!("`{text}` is not a visitor class"))
    }
}

/// What one visit tells about its visitor.
#[derive(Debug, Clone, Copy)]
pub struct Visit<'a> {
    pub visitor: Visitor,
    /// See [`crate::sketch::visitor_hash`].
    pub identity: u64,
    /// The referring page's host (see [`referrer_host`]).
    pub referrer: Option<&'a str>,
    /// Where the visitor is, when a GeoIP database is configured.
    pub country: Option<Country>,
}

/// The longest referrer host kept; longer ones are not valid DNS names anyway.
const MAX_HOST_CHARS: usize = 100;

/// The host of a `Referer` header, lowercase, if it names one of reasonable length.
pub fn referrer_host(referer: &str) -> Option<String> {
    let url = url::Url::parse(referer).ok()?;
    let host = url.host_str()?;
    (host.len() <= MAX_HOST_CHARS).then(|| host.to_ascii_lowercase())
}

pub(crate) const HOUR_MICROS: i64 = 3_600_000_000;
pub(crate) const DAY_MICROS: i64 = 24 * HOUR_MICROS;
/// Referring hosts and recent clicks one link keeps between two flushes; more are folded into
/// "(other)" or left out, so a buffered link costs at most a few KiB whatever its traffic.
const HOSTS_PER_FLUSH: usize = 5;
const RECENT_PER_FLUSH: usize = 5;
/// Visitor hashes a link keeps before folding them into a sketch (1 KiB, like 128 hashes).
const HASHES_BEFORE_SKETCH: usize = 128;
/// The referrer of visits from hosts beyond a link's quota.
pub(crate) const OTHER_HOSTS: &str = "(other)";

/// Clicks of one link in one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HourCounts {
    pub hour: i64,
    pub humans: i64,
    pub bots: i64,
    /// Human clicks already added to the link's total when they were let through (links with
    /// `max_clicks`), which the flush must not add again.
    pub counted: i64,
}

/// The visitors of one link and day, as hashes while few, else as a sketch.
#[derive(Debug, Clone)]
pub(crate) enum Visitors {
    Few(Vec<u64>),
    Many(Sketch),
}

impl Visitors {
    fn add(&mut self, hash: u64) {
        match self {
            Self::Few(hashes) if hashes.len() < HASHES_BEFORE_SKETCH => hashes.push(hash),
            Self::Few(hashes) => {
                let mut sketch = Sketch::default();
                hashes.iter().for_each(|h| sketch.add(*h));
                sketch.add(hash);
                *self = Self::Many(sketch);
            }
            Self::Many(sketch) => sketch.add(hash),
        }
    }

    pub fn into_sketch(self) -> Sketch {
        match self {
            Self::Few(hashes) => {
                let mut sketch = Sketch::default();
                hashes.iter().for_each(|h| sketch.add(*h));
                sketch
            }
            Self::Many(sketch) => sketch,
        }
    }
}

/// Human visits of one link and day: who, and from where.
#[derive(Debug, Clone)]
pub(crate) struct DayCounts {
    pub day: i64,
    pub visitors: Visitors,
    pub referrers: Vec<(String, i64)>,
    /// At most one entry per ISO code, so bounded.
    pub countries: Vec<(Country, i64)>,
}

/// One click for the recent-clicks log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentClick {
    pub at: Timestamp,
    pub visitor: Visitor,
    pub referrer: Option<String>,
    pub country: Option<Country>,
}

/// Everything buffered for one link.
#[derive(Debug, Clone, Default)]
pub(crate) struct LinkClicks {
    pub workspace_id: String,
    pub hours: Vec<HourCounts>,
    pub days: Vec<DayCounts>,
    /// The latest clicks, oldest first.
    pub recent: Vec<RecentClick>,
}

impl LinkClicks {
    fn add(&mut self, at: Timestamp, visit: &Visit<'_>, counted: bool) {
        let micros = at.as_micros();
        let human = !visit.visitor.is_bot();
        let click = HourCounts {
            hour: micros - micros.rem_euclid(HOUR_MICROS),
            humans: i64::from(human),
            bots: i64::from(!human),
            counted: i64::from(counted && human),
        };
        self.add_hour(&click);
        if human {
            let day = micros - micros.rem_euclid(DAY_MICROS);
            let index = match self.days.iter().position(|d| d.day == day) {
                Some(i) => i,
                None => {
                    self.days.push(DayCounts {
                        day,
                        visitors: Visitors::Few(Vec::new()),
                        referrers: Vec::new(),
                        countries: Vec::new(),
                    });
                    self.days.len() - 1
                }
            };
            let counts = &mut self.days[index];
            counts.visitors.add(visit.identity);
            if let Some(host) = visit.referrer {
                add_host(&mut counts.referrers, host, 1);
            }
            if let Some(country) = visit.country {
                add_country(&mut counts.countries, country, 1);
            }
        }
        if self.recent.len() == RECENT_PER_FLUSH {
            self.recent.remove(0);
        }
        self.recent.push(RecentClick {
            at,
            visitor: visit.visitor,
            referrer: visit.referrer.map(str::to_owned),
            country: visit.country,
        });
    }

    fn add_hour(&mut self, click: &HourCounts) {
        match self.hours.iter_mut().find(|h| h.hour == click.hour) {
            Some(existing) => {
                existing.humans += click.humans;
                existing.bots += click.bots;
                existing.counted += click.counted;
            }
            None => self.hours.push(*click),
        }
    }

    /// Folds `other` (counts whose write failed) into these.
    fn merge(&mut self, other: Self) {
        other.hours.iter().for_each(|h| self.add_hour(h));
        for day in other.days {
            match self.days.iter_mut().find(|d| d.day == day.day) {
                Some(mine) => {
                    let mut sketch =
                        std::mem::replace(&mut mine.visitors, Visitors::Few(Vec::new()))
                            .into_sketch();
                    sketch.merge(&day.visitors.into_sketch());
                    mine.visitors = Visitors::Many(sketch);
                    for (host, n) in day.referrers {
                        add_host(&mut mine.referrers, &host, n);
                    }
                    for (country, n) in day.countries {
                        add_country(&mut mine.countries, country, n);
                    }
                }
                None => self.days.push(day),
            }
        }
        let mut recent = other.recent;
        recent.append(&mut self.recent);
        let excess = recent.len().saturating_sub(RECENT_PER_FLUSH);
        self.recent = recent.split_off(excess);
    }

    fn clicks(&self) -> i64 {
        self.hours.iter().map(|h| h.humans + h.bots).sum()
    }
}

/// Adds `n` visits from `host`, within the per-flush quota of hosts.
fn add_host(referrers: &mut Vec<(String, i64)>, host: &str, n: i64) {
    if let Some(entry) = referrers.iter_mut().find(|(h, _)| h == host) {
        entry.1 += n;
    } else if referrers.len() < HOSTS_PER_FLUSH {
        referrers.push((host.to_owned(), n));
    } else if let Some(other) = referrers.iter_mut().find(|(h, _)| h == OTHER_HOSTS) {
        other.1 += n;
    } else {
        // The last slot becomes "(other)", holding what it held and this.
        let last = referrers.len() - 1;
        let held = referrers[last].1;
        referrers[last] = (OTHER_HOSTS.to_owned(), held + n);
    }
}

fn add_country(countries: &mut Vec<(Country, i64)>, country: Country, n: i64) {
    match countries.iter_mut().find(|(c, _)| *c == country) {
        Some(entry) => entry.1 += n,
        None => countries.push((country, n)),
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
    pending: Mutex<HashMap<String, LinkClicks>>,
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
    pub(crate) fn record(
        &self,
        (workspace, link): (&WorkspaceId, &LinkId),
        at: Timestamp,
        visit: &Visit<'_>,
        counted: bool,
    ) {
        let links = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(clicks) = pending.get_mut(link.as_str()) {
                clicks.add(at, visit, counted);
            } else if pending.len() < self.settings.max_links {
                let mut clicks = LinkClicks {
                    workspace_id: workspace.as_str().to_owned(),
                    ..LinkClicks::default()
                };
                clicks.add(at, visit, counted);
                pending.insert(link.as_str().to_owned(), clicks);
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
        pending.values().map(LinkClicks::clicks).sum()
    }

    /// Everything buffered, by link id: every flush, on every node, then locks its rows in that
    /// one order, so flushes that share links wait for each other instead of deadlocking.
    fn take(&self) -> Vec<(String, LinkClicks)> {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut taken: Vec<(String, LinkClicks)> = taken.into_iter().collect();
        taken.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        taken
    }

    /// Puts counts whose write failed back, within the bound.
    fn put_back(&self, batch: Vec<(String, LinkClicks)>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (link, clicks) in batch {
            if let Some(existing) = pending.get_mut(&link) {
                existing.merge(clicks);
            } else if pending.len() < self.settings.max_links {
                pending.insert(link, clicks);
            } else {
                self.dropped
                    .increment(u64::try_from(clicks.clicks()).unwrap_or(0));
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
            match crate::flush::write(db, &batch).await {
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

    fn visit(visitor: Visitor, identity: u64, referrer: Option<&str>) -> Visit<'_> {
        Visit {
            visitor,
            identity,
            referrer,
            country: Country::parse("NZ"),
        }
    }

    #[test]
    fn the_buffer_keeps_counts_per_link_and_hour_and_is_bounded() {
        let buffer = ClickBuffer::new(ClickSettings {
            max_links: 2,
            ..ClickSettings::default()
        });
        let at = Timestamp::from_micros(10 * HOUR_MICROS + 5);
        let next_hour = Timestamp::from_micros(11 * HOUR_MICROS);
        let ws = WorkspaceId::from_trusted("ws_1".to_owned());
        let [a, b, c] = ["a", "b", "c"].map(|s| LinkId::from_trusted(format!("link_{s}")));
        let [a, b, c] = [(&ws, &a), (&ws, &b), (&ws, &c)];
        buffer.record(
            a,
            at,
            &visit(Visitor::Browser, 1, Some("news.example")),
            false,
        );
        buffer.record(a, at, &visit(Visitor::Bot, 2, Some("bots.example")), false);
        buffer.record(a, next_hour, &visit(Visitor::Unknown, 1, None), true);
        buffer.record(b, at, &visit(Visitor::Browser, 3, None), false);
        buffer.record(c, at, &visit(Visitor::Browser, 4, None), false);
        assert_eq!(
            buffer.pending_clicks(),
            4,
            "the third link's click is dropped"
        );
        let taken = buffer.take();
        let ids: Vec<&str> = taken.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["link_a", "link_b"], "taken in link id order");
        let a_clicks = &taken[0].1;
        let hour = |hour, humans, bots, counted| HourCounts {
            hour,
            humans,
            bots,
            counted,
        };
        assert_eq!(
            a_clicks.hours,
            [
                hour(10 * HOUR_MICROS, 1, 1, 0),
                hour(11 * HOUR_MICROS, 1, 0, 1)
            ]
        );
        // Humans only: the bot's visit and referrer are not among the day's.
        let day = &a_clicks.days[0];
        assert_eq!(day.referrers, [("news.example".to_owned(), 1)]);
        assert_eq!(day.visitors.clone().into_sketch().estimate(), 1);
        assert_eq!(a_clicks.recent.len(), 3, "the log keeps bots too");
        assert_eq!(buffer.pending_clicks(), 0);
        buffer.put_back(taken);
        assert_eq!(buffer.pending_clicks(), 4);
    }

    #[test]
    fn hosts_and_recent_clicks_per_link_are_bounded() {
        let buffer = ClickBuffer::new(ClickSettings::default());
        let ws = WorkspaceId::from_trusted("ws_1".to_owned());
        let link = LinkId::from_trusted("link_x".to_owned());
        let at = Timestamp::from_micros(DAY_MICROS);
        for n in 0..1000u64 {
            let host = format!("h{}.example", n % 50);
            buffer.record(
                (&ws, &link),
                at,
                &visit(Visitor::Browser, n, Some(&host)),
                false,
            );
        }
        let taken = buffer.take();
        let clicks = &taken[0].1;
        let referrers = &clicks.days[0].referrers;
        assert_eq!(referrers.len(), HOSTS_PER_FLUSH);
        assert_eq!(referrers.iter().map(|(_, n)| n).sum::<i64>(), 1000);
        assert!(referrers.iter().any(|(h, _)| h == OTHER_HOSTS));
        assert_eq!(clicks.recent.len(), RECENT_PER_FLUSH);
        assert!(matches!(clicks.days[0].visitors, Visitors::Many(_)));
        assert_eq!(
            referrer_host("https://News.Example:8443/a?b#c").as_deref(),
            Some("news.example")
        );
        assert_eq!(referrer_host("not a url"), None);
    }
}
