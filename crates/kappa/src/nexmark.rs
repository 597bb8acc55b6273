//! A deterministic Nexmark event generator (persons, auctions, bids as JSON objects).
//!
//! It follows the standard generator of Apache Beam's and Flink's Nexmark suites
//! (`GeneratorConfig`, `NexmarkGenerator`, `PersonGenerator`, `AuctionGenerator`,
//! `BidGenerator`):
//!
//! - the n-th event of a generator has event number `first_event_number + n` and event id
//!   `first_event_id + adjusted event number` (the adjustment only matters with an
//!   out-of-order group size above 1);
//! - event id mod 50 picks the kind: 0 is a person, 1..=3 an auction, 4..=49 a bid
//!   (proportions 1:3:46);
//! - person and auction ids are derived from the event id (`lastBase0PersonId`,
//!   `lastBase0AuctionId`) and start at 1000, so a bid's auction and bidder and an auction's
//!   seller are ids of events generated earlier in the stream;
//! - a bid is for a "hot" auction (the first of the last batch of 100 auctions) with
//!   probability 1 - 1/`hot_auction_ratio`, by a hot bidder (the second of the last batch of
//!   100 persons) with probability 1 - 1/`hot_bidders_ratio`; an auction is by a hot seller
//!   (the first of the batch) with probability 1 - 1/`hot_sellers_ratio`; otherwise the id is
//!   uniform over the last `num_in_flight_auctions` auctions or `num_active_people` persons;
//! - the event's time is `base_time + event_number * inter_event_delay`, the inter-event delay
//!   being `1 / events_per_sec`; an auction expires within twice the time it takes to generate
//!   `num_in_flight_auctions` more auctions;
//! - strings, prices and `extra` padding (to the average event sizes 200/500/100 bytes) are
//!   drawn as in the reference, from a `java.util.Random`-compatible generator seeded with the
//!   event id (as Beam does), xor-ed with a mix of `seed` when `seed` is not 0.
//!
//! Deliberate differences: the reference lets random person and auction ids run up to 10
//! ahead of the last generated one (`PERSON_ID_LEAD`, `AUCTION_ID_LEAD`) and a hot bidder may
//! be a person not generated yet; here the leads default to 0 and the hot bidder is clamped,
//! so every reference is to an earlier event (set the leads to 10 for the reference's
//! behaviour). The `extra` padding uses letters only (the reference can emit a few
//! punctuation characters, among them a backslash), and the bid URLs, random per process in
//! the reference, are derived from the seed.

/// Events of each kind per [`TOTAL_PROPORTION`] consecutive event ids.
pub const PERSON_PROPORTION: u64 = 1;
pub const AUCTION_PROPORTION: u64 = 3;
pub const BID_PROPORTION: u64 = 46;
pub const TOTAL_PROPORTION: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;

pub const FIRST_PERSON_ID: i64 = 1000;
pub const FIRST_AUCTION_ID: i64 = 1000;
pub const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: i32 = 5;

/// Hot sellers, bidders and auctions are the first (bidders: second) of batches of this many.
const HOT_SELLER_RATIO: i64 = 100;
const HOT_BIDDER_RATIO: i64 = 100;
const HOT_AUCTION_RATIO: i64 = 100;
const HOT_CHANNELS_RATIO: i32 = 2;
const CHANNELS_NUMBER: usize = 10_000;
const MIN_STRING_LENGTH: i32 = 3;

/// 2015-07-15T00:00:00Z, the base time of Beam's Nexmark (`NexmarkUtils.BASE_TIME`).
pub const DEFAULT_BASE_TIME_MS: i64 = 1_436_918_400_000;

const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// The parameters of a generator; [`GeneratorConfig::default`] has the Nexmark defaults.
#[derive(Clone, Debug)]
pub struct GeneratorConfig {
    /// Event time of event number 0, in ms since the epoch.
    pub base_time_ms: i64,
    /// Added to the (adjusted) event number to make the event id, which picks the kind of the
    /// event, its ids and its random draws. Keep it a multiple of 50 so the first events are a
    /// person and auctions.
    pub first_event_id: u64,
    /// Event number of this generator's first event (it sets the event time).
    pub first_event_number: u64,
    /// Events to generate; 0 for no limit.
    pub max_events: u64,
    /// Event-time rate: the inter-event delay is `1 / events_per_sec` seconds.
    pub events_per_sec: f64,
    /// 0 gives Beam's draws (a `java.util.Random` seeded with the event id).
    pub seed: u64,
    pub num_active_people: u64,
    pub num_in_flight_auctions: u64,
    pub hot_auction_ratio: i32,
    pub hot_sellers_ratio: i32,
    pub hot_bidders_ratio: i32,
    pub avg_person_byte_size: i32,
    pub avg_auction_byte_size: i32,
    pub avg_bid_byte_size: i32,
    pub out_of_order_group_size: u64,
    /// How far beyond the last generated person a random person id may go (reference: 10).
    pub person_id_lead: u64,
    /// How far beyond the last generated auction a random auction id may go (reference: 10).
    pub auction_id_lead: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            base_time_ms: DEFAULT_BASE_TIME_MS,
            first_event_id: 0,
            first_event_number: 0,
            max_events: 0,
            events_per_sec: 10_000.0,
            seed: 0,
            num_active_people: 1000,
            num_in_flight_auctions: 100,
            hot_auction_ratio: 2,
            hot_sellers_ratio: 4,
            hot_bidders_ratio: 4,
            avg_person_byte_size: 200,
            avg_auction_byte_size: 500,
            avg_bid_byte_size: 100,
            out_of_order_group_size: 1,
            person_id_lead: 0,
            auction_id_lead: 0,
        }
    }
}

impl GeneratorConfig {
    fn inter_event_delay_us(&self) -> f64 {
        1_000_000.0 / self.events_per_sec
    }

    fn next_event_number(&self, events_so_far: u64) -> u64 {
        self.first_event_number + events_so_far
    }

    /// The event number with the out-of-order jitter of `out_of_order_group_size`.
    fn next_adjusted_event_number(&self, events_so_far: u64) -> u64 {
        let n = self.out_of_order_group_size.max(1);
        let number = self.next_event_number(events_so_far);
        (number / n) * n + number.wrapping_mul(953) % n
    }

    /// Event time of the event with this event number.
    pub fn timestamp_for_event(&self, event_number: u64) -> i64 {
        self.base_time_ms + (event_number as f64 * self.inter_event_delay_us()) as i64 / 1000
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Person,
    Auction,
    Bid,
}

/// What [`NexmarkGenerator::next_event`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventInfo {
    pub kind: EventKind,
    /// The person's id, the auction's id, or the bid's auction: the message key.
    pub key: i64,
    pub event_id: u64,
    /// The event's `date_time`, ms since the epoch.
    pub timestamp_ms: i64,
}

pub struct NexmarkGenerator {
    config: GeneratorConfig,
    events_so_far: u64,
    seed_mix: i64,
    hot_urls: [Vec<u8>; 4],
    /// `"channel":"...","url":"..."` of each non-hot channel, rendered once.
    channel_fields: Vec<Box<[u8]>>,
}

impl NexmarkGenerator {
    pub fn new(config: GeneratorConfig) -> Self {
        let seed_mix = if config.seed == 0 {
            0
        } else {
            splitmix64(config.seed) as i64
        };
        // The reference draws these from unseeded generators; here they depend on the seed.
        let url_random = |n: i64| JavaRandom::new(seed_mix ^ (0x4e65_786d_6172_6b00 + n));
        let hot_urls = std::array::from_fn(|i| {
            let mut url = Vec::with_capacity(64);
            base_url(&mut url_random(-1 - i as i64), &mut url);
            url
        });
        let channel_fields = (0..CHANNELS_NUMBER)
            .map(|c| {
                let mut random = url_random(c as i64);
                let mut f = Vec::with_capacity(100);
                f.extend_from_slice(b"\"channel\":\"channel-");
                write_int(&mut f, c as i64);
                f.extend_from_slice(b"\",\"url\":\"");
                base_url(&mut random, &mut f);
                if random.next_int_bounded(10) > 0 {
                    f.extend_from_slice(b"&channel_id=");
                    write_int(&mut f, (c as i32).reverse_bits().unsigned_abs() as i64);
                }
                f.push(b'"');
                f.into_boxed_slice()
            })
            .collect();
        NexmarkGenerator {
            config,
            events_so_far: 0,
            seed_mix,
            hot_urls,
            channel_fields,
        }
    }

    pub fn events_so_far(&self) -> u64 {
        self.events_so_far
    }

    pub fn has_next(&self) -> bool {
        self.config.max_events == 0 || self.events_so_far < self.config.max_events
    }

    /// Event id of the next event.
    pub fn next_event_id(&self) -> u64 {
        self.config.first_event_id + self.config.next_adjusted_event_number(self.events_so_far)
    }

    /// Writes the next event, as one JSON object, into `out` (cleared first) and describes it;
    /// `None` once `max_events` have been generated.
    pub fn next_event(&mut self, out: &mut Vec<u8>) -> Option<EventInfo> {
        if !self.has_next() {
            return None;
        }
        out.clear();
        let config = &self.config;
        let timestamp =
            config.timestamp_for_event(config.next_adjusted_event_number(self.events_so_far));
        let event_id = self.next_event_id();
        let mut random = JavaRandom::new(event_id as i64 ^ self.seed_mix);
        let rem = event_id % TOTAL_PROPORTION;
        let (kind, key) = if rem < PERSON_PROPORTION {
            (
                EventKind::Person,
                self.person(event_id, &mut random, timestamp, out),
            )
        } else if rem < PERSON_PROPORTION + AUCTION_PROPORTION {
            (
                EventKind::Auction,
                self.auction(event_id, &mut random, timestamp, out),
            )
        } else {
            (
                EventKind::Bid,
                self.bid(event_id, &mut random, timestamp, out),
            )
        };
        self.events_so_far += 1;
        Some(EventInfo {
            kind,
            key,
            event_id,
            timestamp_ms: timestamp,
        })
    }

    fn person(
        &self,
        event_id: u64,
        random: &mut JavaRandom,
        timestamp: i64,
        out: &mut Vec<u8>,
    ) -> i64 {
        let id = last_base0_person_id(event_id) + FIRST_PERSON_ID;
        out.extend_from_slice(b"{\"id\":");
        write_int(out, id);
        out.extend_from_slice(b",\"name\":\"");
        let first = FIRST_NAMES[random.next_int_bounded(FIRST_NAMES.len() as i32) as usize];
        let last = LAST_NAMES[random.next_int_bounded(LAST_NAMES.len() as i32) as usize];
        out.extend_from_slice(first.as_bytes());
        out.push(b' ');
        out.extend_from_slice(last.as_bytes());
        let mut size = 8 + first.len() + 1 + last.len();
        out.extend_from_slice(b"\",\"emailAddress\":\"");
        size += next_string(random, 7, b' ', out);
        out.push(b'@');
        size += next_string(random, 5, b' ', out);
        out.extend_from_slice(b".com");
        size += 5;
        out.extend_from_slice(b"\",\"creditCard\":\"");
        for i in 0..4 {
            if i > 0 {
                out.push(b' ');
            }
            let n = random.next_int_bounded(10_000) as u32;
            out.extend_from_slice(&[
                b'0' + (n / 1000) as u8,
                b'0' + (n / 100 % 10) as u8,
                b'0' + (n / 10 % 10) as u8,
                b'0' + (n % 10) as u8,
            ]);
        }
        size += 19;
        out.extend_from_slice(b"\",\"city\":\"");
        let city = US_CITIES[random.next_int_bounded(US_CITIES.len() as i32) as usize];
        out.extend_from_slice(city.as_bytes());
        out.extend_from_slice(b"\",\"state\":\"");
        let state = US_STATES[random.next_int_bounded(US_STATES.len() as i32) as usize];
        out.extend_from_slice(state.as_bytes());
        size += city.len() + state.len();
        out.extend_from_slice(b"\",\"date_time\":");
        write_timestamp(out, timestamp);
        out.extend_from_slice(b",\"extra\":\"");
        next_extra(random, size, self.config.avg_person_byte_size, out);
        out.extend_from_slice(b"\"}");
        id
    }

    fn auction(
        &self,
        event_id: u64,
        random: &mut JavaRandom,
        timestamp: i64,
        out: &mut Vec<u8>,
    ) -> i64 {
        let config = &self.config;
        let id = last_base0_auction_id(event_id) + FIRST_AUCTION_ID;
        // Draws in the reference's order: seller, category, initial bid, expiry, name,
        // description, reserve, extra.
        let seller = if random.next_int_bounded(config.hot_sellers_ratio) > 0 {
            (last_base0_person_id(event_id) / HOT_SELLER_RATIO) * HOT_SELLER_RATIO
        } else {
            next_base0_person_id(event_id, random, config)
        } + FIRST_PERSON_ID;
        let category = FIRST_CATEGORY_ID + random.next_int_bounded(NUM_CATEGORIES) as i64;
        let initial_bid = next_price(random);
        let expires = timestamp + self.next_auction_length_ms(random, timestamp);
        out.extend_from_slice(b"{\"id\":");
        write_int(out, id);
        out.extend_from_slice(b",\"itemName\":\"");
        let mut size = 8 + next_string(random, 20, b' ', out);
        out.extend_from_slice(b"\",\"description\":\"");
        size += next_string(random, 100, b' ', out) + 40;
        let reserve = initial_bid + next_price(random);
        out.extend_from_slice(b"\",\"initialBid\":");
        write_int(out, initial_bid);
        out.extend_from_slice(b",\"reserve\":");
        write_int(out, reserve);
        out.extend_from_slice(b",\"date_time\":");
        write_timestamp(out, timestamp);
        out.extend_from_slice(b",\"expires\":");
        write_timestamp(out, expires);
        out.extend_from_slice(b",\"seller\":");
        write_int(out, seller);
        out.extend_from_slice(b",\"category\":");
        write_int(out, category);
        out.extend_from_slice(b",\"extra\":\"");
        next_extra(random, size, config.avg_auction_byte_size, out);
        out.extend_from_slice(b"\"}");
        id
    }

    /// An auction lasts on average as long as it takes to generate `num_in_flight_auctions`
    /// more auctions.
    fn next_auction_length_ms(&self, random: &mut JavaRandom, timestamp: i64) -> i64 {
        let config = &self.config;
        let current = config.next_adjusted_event_number(self.events_so_far);
        let events_for_auctions =
            config.num_in_flight_auctions * TOTAL_PROPORTION / AUCTION_PROPORTION;
        let future_auction = config.timestamp_for_event(current + events_for_auctions);
        let horizon_ms = future_auction - timestamp;
        1 + next_long(random, (horizon_ms * 2).max(1))
    }

    fn bid(
        &self,
        event_id: u64,
        random: &mut JavaRandom,
        timestamp: i64,
        out: &mut Vec<u8>,
    ) -> i64 {
        let config = &self.config;
        let auction = if random.next_int_bounded(config.hot_auction_ratio) > 0 {
            (last_base0_auction_id(event_id) / HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO
        } else {
            next_base0_auction_id(event_id, random, config)
        } + FIRST_AUCTION_ID;
        let bidder = if random.next_int_bounded(config.hot_bidders_ratio) > 0 {
            // The second person of the batch, so that hot bidders are not hot sellers; not
            // beyond the allowed lead.
            let last = last_base0_person_id(event_id);
            ((last / HOT_BIDDER_RATIO) * HOT_BIDDER_RATIO + 1)
                .min(last + config.person_id_lead as i64)
        } else {
            next_base0_person_id(event_id, random, config)
        } + FIRST_PERSON_ID;
        let price = next_price(random);
        out.extend_from_slice(b"{\"auction\":");
        write_int(out, auction);
        out.extend_from_slice(b",\"bidder\":");
        write_int(out, bidder);
        out.extend_from_slice(b",\"price\":");
        write_int(out, price);
        out.push(b',');
        if random.next_int_bounded(HOT_CHANNELS_RATIO) > 0 {
            let i = random.next_int_bounded(HOT_CHANNELS.len() as i32) as usize;
            out.extend_from_slice(b"\"channel\":\"");
            out.extend_from_slice(HOT_CHANNELS[i].as_bytes());
            out.extend_from_slice(b"\",\"url\":\"");
            out.extend_from_slice(&self.hot_urls[i]);
            out.push(b'"');
        } else {
            let c = random.next_int_bounded(CHANNELS_NUMBER as i32) as usize;
            out.extend_from_slice(&self.channel_fields[c]);
        }
        out.extend_from_slice(b",\"date_time\":");
        write_timestamp(out, timestamp);
        out.extend_from_slice(b",\"extra\":\"");
        next_extra(random, 32, config.avg_bid_byte_size, out);
        out.extend_from_slice(b"\"}");
        auction
    }
}

/// The last person id (base 0) generated at or before this event id: the event's own id if
/// it is a person.
pub fn last_base0_person_id(event_id: u64) -> i64 {
    let epoch = (event_id / TOTAL_PROPORTION) as i64;
    let mut offset = event_id % TOTAL_PROPORTION;
    if offset >= PERSON_PROPORTION {
        // An auction or a bid: the last person of this epoch.
        offset = PERSON_PROPORTION - 1;
    }
    epoch * PERSON_PROPORTION as i64 + offset as i64
}

/// The last auction id (base 0) generated at or before this event id (-1 before the first).
pub fn last_base0_auction_id(event_id: u64) -> i64 {
    let mut epoch = (event_id / TOTAL_PROPORTION) as i64;
    let offset = event_id % TOTAL_PROPORTION;
    let offset = if offset < PERSON_PROPORTION {
        // A person: the last auction of the previous epoch.
        epoch -= 1;
        AUCTION_PROPORTION - 1
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        // A bid: the last auction of this epoch.
        AUCTION_PROPORTION - 1
    } else {
        offset - PERSON_PROPORTION
    };
    epoch * AUCTION_PROPORTION as i64 + offset as i64
}

/// A random person among the last `num_active_people` (plus the lead).
fn next_base0_person_id(event_id: u64, random: &mut JavaRandom, config: &GeneratorConfig) -> i64 {
    let num_people = last_base0_person_id(event_id) + 1;
    let active = num_people.min(config.num_active_people.max(1) as i64);
    let n = next_long(random, active + config.person_id_lead as i64);
    num_people - active + n
}

/// A random auction among the last `num_in_flight_auctions` (plus the lead).
fn next_base0_auction_id(event_id: u64, random: &mut JavaRandom, config: &GeneratorConfig) -> i64 {
    let max_auction = last_base0_auction_id(event_id);
    let min_auction = (max_auction - config.num_in_flight_auctions as i64).max(0);
    min_auction
        + next_long(
            random,
            max_auction - min_auction + 1 + config.auction_id_lead as i64,
        )
}

/// Log-uniform between 1 and 10^6 dollars, in cents.
fn next_price(random: &mut JavaRandom) -> i64 {
    // Java's Math.round: floor(x + 0.5).
    (10f64.powf(random.next_double() * 6.0) * 100.0 + 0.5).floor() as i64
}

/// A value in `0..n` (Beam's `LongGenerator.nextLong`).
fn next_long(random: &mut JavaRandom, n: i64) -> i64 {
    if n < i32::MAX as i64 {
        random.next_int_bounded(n as i32) as i64
    } else {
        (random.next_long() % n).abs()
    }
}

/// Appends a string of 3 to `max_len - 1` letters with `special` at random places, trimmed of
/// spaces at both ends; returns its length.
fn next_string(random: &mut JavaRandom, max_len: i32, special: u8, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    let len = MIN_STRING_LENGTH + random.next_int_bounded(max_len - MIN_STRING_LENGTH);
    for _ in 0..len {
        if random.next_int_bounded(13) == 0 {
            out.push(special);
        } else {
            out.push(b'a' + random.next_int_bounded(26) as u8);
        }
    }
    while out.len() > start && out[out.len() - 1] == b' ' {
        out.pop();
    }
    let leading = out[start..].iter().take_while(|&&c| c == b' ').count();
    if leading > 0 {
        out.copy_within(start + leading.., start);
        out.truncate(out.len() - leading);
    }
    out.len() - start
}

/// Appends letters so that `current_size` plus their number averages `average_size`
/// (within ±20 %).
fn next_extra(random: &mut JavaRandom, current_size: usize, average_size: i32, out: &mut Vec<u8>) {
    let current_size = current_size as i32;
    if current_size > average_size {
        return;
    }
    let desired = average_size - current_size;
    let delta = (desired as f64 * 0.2).round() as i32;
    let size = desired - delta
        + if delta == 0 {
            0
        } else {
            random.next_int_bounded(2 * delta)
        };
    // Six letters out of each random int, as the reference's nextExactString.
    // The k-th letter is (rnd / 26^k) % 26 with Java's truncating division (the reference
    // divides by 26 k times: the same); written so that the six divisions are independent.
    let letter = |rnd: i32, pow: i32| b'a' + (rnd / pow % 26).unsigned_abs() as u8;
    let start = out.len();
    out.resize(start + size.max(0) as usize, 0);
    let mut chunks = out[start..].chunks_exact_mut(6);
    for chunk in &mut chunks {
        let rnd = random.next_int();
        chunk.copy_from_slice(&[
            letter(rnd, 1),
            letter(rnd, 26),
            letter(rnd, 676),
            letter(rnd, 17_576),
            letter(rnd, 456_976),
            letter(rnd, 11_881_376),
        ]);
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let mut rnd = random.next_int();
        for c in rest {
            *c = letter(rnd, 1);
            rnd /= 26;
        }
    }
}

fn base_url(random: &mut JavaRandom, out: &mut Vec<u8>) {
    out.extend_from_slice(b"https://www.nexmark.com/");
    for _ in 0..3 {
        next_string(random, 5, b'_', out);
        out.push(b'/');
    }
    out.extend_from_slice(b"item.htm?query=1");
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn write_int(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends `"yyyy-MM-dd HH:mm:ss.SSS"` (UTC, quoted) for ms since the epoch.
pub fn write_timestamp(out: &mut Vec<u8>, ms: i64) {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let year = year.clamp(0, 9999) as u32;
    let (h, m, s, milli) = (
        (in_day / 3_600_000) as u32,
        (in_day / 60_000 % 60) as u32,
        (in_day / 1000 % 60) as u32,
        (in_day % 1000) as u32,
    );
    let d = |n: u32| b'0' + n as u8;
    out.extend_from_slice(&[
        b'"',
        d(year / 1000),
        d(year / 100 % 10),
        d(year / 10 % 10),
        d(year % 10),
        b'-',
        d(month / 10),
        d(month % 10),
        b'-',
        d(day / 10),
        d(day % 10),
        b' ',
        d(h / 10),
        d(h % 10),
        b':',
        d(m / 10),
        d(m % 10),
        b':',
        d(s / 10),
        d(s % 10),
        b'.',
        d(milli / 100),
        d(milli / 10 % 10),
        d(milli % 10),
        b'"',
    ]);
}

/// (year, month, day) of a day number since 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `java.util.Random`: the 48-bit linear congruential generator the reference draws from.
struct JavaRandom {
    seed: u64,
}

impl JavaRandom {
    const MULTIPLIER: u64 = 0x5_DEEC_E66D;
    const MASK: u64 = (1 << 48) - 1;

    fn new(seed: i64) -> Self {
        JavaRandom {
            seed: (seed as u64 ^ Self::MULTIPLIER) & Self::MASK,
        }
    }

    fn next(&mut self, bits: u32) -> i32 {
        self.seed = self.seed.wrapping_mul(Self::MULTIPLIER).wrapping_add(0xB) & Self::MASK;
        (self.seed >> (48 - bits)) as i32
    }

    fn next_int(&mut self) -> i32 {
        self.next(32)
    }

    /// Uniform in `0..bound`; `bound` must be positive.
    fn next_int_bounded(&mut self, bound: i32) -> i32 {
        debug_assert!(bound > 0);
        let mut r = self.next(31);
        let m = bound - 1;
        if bound & m == 0 {
            return ((bound as i64 * r as i64) >> 31) as i32;
        }
        let mut u = r;
        loop {
            r = u % bound;
            if u.wrapping_sub(r).wrapping_add(m) >= 0 {
                return r;
            }
            u = self.next(31);
        }
    }

    fn next_long(&mut self) -> i64 {
        ((self.next(32) as i64) << 32).wrapping_add(self.next(32) as i64)
    }

    fn next_double(&mut self) -> f64 {
        (((self.next(26) as i64) << 27) + self.next(27) as i64) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn generate(config: GeneratorConfig, n: usize) -> Vec<(EventInfo, Vec<u8>)> {
        let mut generator = NexmarkGenerator::new(config);
        let mut buf = Vec::new();
        (0..n)
            .map(|_| {
                let info = generator.next_event(&mut buf).expect("an event");
                (info, buf.clone())
            })
            .collect()
    }

    #[test]
    fn nexmark_java_random_matches_java() {
        // Values of java.util.Random(42) and Random(0).
        let mut r = JavaRandom::new(42);
        assert_eq!(r.next_int(), -1170105035);
        assert_eq!(r.next_int_bounded(100), 63);
        let mut r = JavaRandom::new(0);
        assert_eq!(r.next_int(), -1155484576);
        let mut r = JavaRandom::new(0);
        assert_eq!(r.next_long(), -4962768465676381896);
        let mut r = JavaRandom::new(0);
        assert_eq!(r.next_double(), 0.730967787376657);
        let mut r = JavaRandom::new(12345);
        let draws = [13, 10_000, 16, 2_000_000_000].map(|b| r.next_int_bounded(b));
        assert_eq!(draws, [9, 9080, 14, 1_969_488_828]);
    }

    #[test]
    fn nexmark_extra_letters_as_the_reference() {
        // nextExactString: six letters per int, dividing by 26 after each.
        for average in 0..60 {
            let (mut a, mut b) = (
                JavaRandom::new(average as i64),
                JavaRandom::new(average as i64),
            );
            let mut out = b"x".to_vec();
            next_extra(&mut a, 10, average, &mut out);
            let mut want = b"x".to_vec();
            if average >= 10 {
                let desired = average - 10;
                let delta = (desired as f64 * 0.2).round() as i32;
                let size = desired - delta
                    + if delta == 0 {
                        0
                    } else {
                        b.next_int_bounded(2 * delta)
                    };
                let (mut rnd, mut left) = (0i32, 0);
                for _ in 0..size {
                    if left == 0 {
                        rnd = b.next_int();
                        left = 6;
                    }
                    want.push(b'a' + (rnd % 26).unsigned_abs() as u8);
                    rnd /= 26;
                    left -= 1;
                }
            }
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(want).unwrap()
            );
            assert_eq!(a.next_int(), b.next_int());
        }
    }

    #[test]
    fn nexmark_proportions() {
        let events = generate(GeneratorConfig::default(), 5000);
        let count = |k| events.iter().filter(|(i, _)| i.kind == k).count();
        assert_eq!(count(EventKind::Person), 100);
        assert_eq!(count(EventKind::Auction), 300);
        assert_eq!(count(EventKind::Bid), 4600);
    }

    #[test]
    fn nexmark_bids_refer_to_earlier_events() {
        let mut persons = HashSet::new();
        let mut auctions = HashSet::new();
        let (mut hot_auction, mut hot_bidder) = (0, 0);
        for (info, json) in generate(GeneratorConfig::default(), 50_000) {
            let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            match info.kind {
                EventKind::Person => {
                    let id = v["id"].as_i64().unwrap();
                    assert_eq!(
                        id,
                        FIRST_PERSON_ID + persons.len() as i64,
                        "person ids are dense"
                    );
                    persons.insert(id);
                }
                EventKind::Auction => {
                    let id = v["id"].as_i64().unwrap();
                    assert_eq!(
                        id,
                        FIRST_AUCTION_ID + auctions.len() as i64,
                        "auction ids are dense"
                    );
                    assert!(persons.contains(&v["seller"].as_i64().unwrap()), "{v}");
                    let category = v["category"].as_i64().unwrap();
                    assert!((10..15).contains(&category));
                    assert!(v["expires"].as_str().unwrap() > v["date_time"].as_str().unwrap());
                    auctions.insert(id);
                }
                EventKind::Bid => {
                    let auction = v["auction"].as_i64().unwrap();
                    let bidder = v["bidder"].as_i64().unwrap();
                    assert!(auctions.contains(&auction), "{v}");
                    assert!(persons.contains(&bidder), "{v}");
                    hot_auction += (auction % 100 == FIRST_AUCTION_ID % 100) as u32;
                    hot_bidder += (bidder % 100 == (FIRST_PERSON_ID + 1) % 100) as u32;
                }
            }
        }
        // With ratios 2 and 4, about 1/2 of the bids are for hot auctions and 3/4 by hot
        // bidders (the first draws of java.util.Random seeded with consecutive ids are not
        // quite uniform: 47 % here).
        assert!((18_000..28_000).contains(&hot_auction), "{hot_auction}");
        assert!((30_000..40_000).contains(&hot_bidder), "{hot_bidder}");
    }

    #[test]
    fn nexmark_is_deterministic() {
        let config = GeneratorConfig {
            seed: 7,
            ..GeneratorConfig::default()
        };
        let a = generate(config.clone(), 2000);
        let b = generate(config, 2000);
        assert_eq!(a, b);
        let c = generate(
            GeneratorConfig {
                seed: 8,
                ..GeneratorConfig::default()
            },
            2000,
        );
        assert_ne!(a, c);
        // The kinds and ids follow from the event ids alone.
        assert!(a.iter().zip(&c).all(|(x, y)| x.0.kind == y.0.kind));
    }

    #[test]
    fn nexmark_events_are_json_with_the_fields() {
        let person = [
            "id",
            "name",
            "emailAddress",
            "creditCard",
            "city",
            "state",
            "date_time",
            "extra",
        ];
        let auction = [
            "id",
            "itemName",
            "description",
            "initialBid",
            "reserve",
            "date_time",
            "expires",
            "seller",
            "category",
            "extra",
        ];
        let bid = [
            "auction",
            "bidder",
            "price",
            "channel",
            "url",
            "date_time",
            "extra",
        ];
        let mut sizes = [(0usize, 0usize); 3];
        for (info, json) in generate(GeneratorConfig::default(), 5000) {
            let v: serde_json::Value = serde_json::from_slice(&json)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&json)));
            let obj = v.as_object().unwrap();
            let (fields, i): (&[&str], _) = match info.kind {
                EventKind::Person => (&person, 0),
                EventKind::Auction => (&auction, 1),
                EventKind::Bid => (&bid, 2),
            };
            let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
            let mut want = fields.to_vec();
            keys.sort_unstable();
            want.sort_unstable();
            assert_eq!(keys, want);
            sizes[i].0 += json.len();
            sizes[i].1 += 1;
            let date_time = v["date_time"].as_str().unwrap();
            assert_eq!(date_time.len(), 23, "{date_time}");
            let key = match info.kind {
                EventKind::Person | EventKind::Auction => v["id"].as_i64(),
                EventKind::Bid => v["auction"].as_i64(),
            };
            assert_eq!(key, Some(info.key));
            for name in ["name", "emailAddress", "itemName", "description"] {
                if let Some(s) = v.get(name) {
                    let s = s.as_str().unwrap();
                    assert!(!s.is_empty() && s.trim() == s, "{name}: {s:?}");
                }
            }
        }
        // The first event is at the base time, 10,000 events a second.
        let first = generate(GeneratorConfig::default(), 1);
        let v: serde_json::Value = serde_json::from_slice(&first[0].1).unwrap();
        assert_eq!(v["date_time"], "2015-07-15 00:00:00.000");
        let avg = |i: usize| sizes[i].0 / sizes[i].1;
        // JSON adds the field names to the reference's average sizes (200, 500, 100 bytes).
        assert!((200..400).contains(&avg(0)), "{}", avg(0));
        assert!((500..700).contains(&avg(1)), "{}", avg(1));
        assert!((150..350).contains(&avg(2)), "{}", avg(2));
    }

    #[test]
    fn nexmark_timestamps() {
        let config = GeneratorConfig::default();
        assert_eq!(
            config.timestamp_for_event(10_000),
            DEFAULT_BASE_TIME_MS + 1000
        );
        let mut out = Vec::new();
        write_timestamp(&mut out, 0);
        assert_eq!(out, b"\"1970-01-01 00:00:00.000\"");
        out.clear();
        // 2024-02-29T23:59:59.999Z
        write_timestamp(&mut out, 1_709_251_199_999);
        assert_eq!(out, b"\"2024-02-29 23:59:59.999\"");
        let events = generate(config, 20_001);
        assert_eq!(events[20_000].0.timestamp_ms, DEFAULT_BASE_TIME_MS + 2000);
    }
}
