//! Deterministic retail "product variant" records, and the pool the server serves them from.
//!
//! A record is a function of `(pool index, seed, target_bytes)` only, drawn from a small inline
//! PRNG (splitmix64). It imitates a commerce platform's variants API: ids, a sku, prices per
//! market, stock per location, and timestamps in four formats (epoch milliseconds, ISO-8601 with
//! `Z`, naive `"YYYY-MM-DD HH:MM:SS"`, plain dates). Nested arrays are built from small
//! vocabularies so JSON Lines of these records compress about 20:1 with gzip, like
//! `bench/variants_gen.py`, whose shape and size distribution this follows (not its bytes).
//!
//! Size: each record aims at `target_bytes × U(0.75, 1.25)` bytes of **compact** JSON (`","` and
//! `":"` separators, as the server sends it), stopping at the array item boundary nearest to that
//! goal, so the average compact record is `target_bytes` (the Python generator measures with
//! `", "` separators, which makes its compact records about 8 % smaller). With the defaults,
//! 83,688 records are about 2.39 GB of JSON Lines, the size of the real workload.
//!
//! The server never encodes JSON per request: [`Pool::build`] encodes `pool` distinct records
//! once, without their `"id"`, and [`Pool::write_record`] puts `{"id":10000000+i` back in front
//! of entry `i % pool`. [`expected_record`] and [`record_times`] let verifiers recompute what the
//! server returns at any offset. What to do with the timestamps is the client's business: this
//! module only produces them.

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::LazyLock;
use std::thread;
use std::{fmt, io};

use serde::Serialize;

/// The `"id"` of the record at dataset offset 0; the record at offset `i` has id `ID_BASE + i`.
pub const ID_BASE: u64 = 10_000_000;

/// 2022-01-01T00:00:00Z: the earliest `created_at`.
const EPOCH_2022_MS: i64 = 1_640_995_200_000;
/// `created_at` falls in `[EPOCH_2022_MS, EPOCH_2022_MS + SPAN_MS)`, three 365-day years.
const SPAN_MS: u64 = 3 * 365 * DAY_MS as u64;
const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// What data set to generate: how many records, how many distinct ones, and their size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataConfig {
    /// Records in the data set (dataset offsets `0..total`).
    pub total: u64,
    /// Distinct records kept in memory; offset `i` serves pool entry `i % pool`.
    pub pool: usize,
    /// Seed of the generator; the same seed gives the same records.
    pub seed: u64,
    /// Average size of one record as compact JSON, in bytes; single records vary by ±25 %.
    pub target_bytes: usize,
    /// Top-level fields added at the end of every record, `"extra_1"` … (objects of about
    /// 40 bytes), beyond `target_bytes`: the API's records getting new fields one day.
    pub extra_fields: usize,
}

impl Default for DataConfig {
    /// The full incident workload: 83,688 records of 28.6 KB, from a pool of 4,000.
    fn default() -> Self {
        Self {
            total: 83_688,
            pool: 4_000,
            seed: 42,
            target_bytes: 28_600,
            extra_fields: 0,
        }
    }
}

impl DataConfig {
    /// Distinct records actually built: `pool`, but at least 1 and at most `max(total, 1)`.
    pub fn pool_len(&self) -> usize {
        let total = usize::try_from(self.total.max(1)).unwrap_or(usize::MAX);
        self.pool.clamp(1, total)
    }

    /// The pool entry that dataset offset `index` serves.
    fn pool_index(&self, index: u64) -> u64 {
        index % self.pool_len() as u64
    }
}

/// The instants behind a record's three timestamp fields, in milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordTimes {
    /// `created_at`, sent as this integer.
    pub created_at_ms: i64,
    /// `updated_at`, sent as ISO-8601 with milliseconds and `Z`, e.g. `"2024-02-13T14:04:10.045Z"`.
    pub updated_at_ms: i64,
    /// `published_at`, sent as naive UTC `"YYYY-MM-DD HH:MM:SS"`; a multiple of 1000, since the
    /// format has whole seconds.
    pub published_at_ms: i64,
}

/// The record the server returns at dataset offset `index`, parsed.
///
/// It is built from the same bytes the server sends, so it is equal to the server's record
/// parsed with serde_json, not merely similar.
pub fn expected_record(index: u64, config: &DataConfig) -> serde_json::Value {
    let entry = pool_entry(config.pool_index(index), config);
    let mut json = Vec::with_capacity(entry.len() + 16);
    write_record(&mut json, index, &entry);
    // The bytes are a serde_json serialisation with `{"id":N` spliced onto its `,"product_id"`,
    // so they are valid JSON.
    serde_json::from_slice(&json).expect("generated records are valid JSON")
}

/// The instant of the `updated_at` field of the record at dataset offset `index`, in
/// milliseconds since the Unix epoch: what the server's `updated_since` and `as_of` filters
/// compare (see [`crate::server`]). A few multiplications: cheap enough per record.
pub fn record_updated_at_ms(index: u64, config: &DataConfig) -> i64 {
    updated_ms(config.pool_index(index), config.seed)
}

/// The dataset offsets (`0..total`, ascending) whose records the server serves under the
/// given filters: `updated_at_ms >= updated_since_ms` when that is set (inclusive: a record
/// updated exactly at the instant given is served again), and `updated_at_ms <= as_of_ms`
/// when that is set ([`MockConfig::as_of`](crate::MockConfig::as_of)). For a test's expected
/// set of an incremental run: what a client that asked with `updated_since` on a cursor
/// endpoint of a server with this `as_of` receives, page after page.
pub fn visible_offsets(
    config: &DataConfig,
    updated_since_ms: Option<i64>,
    as_of_ms: Option<i64>,
) -> Vec<u64> {
    // Offsets repeat the pool: decide once per pool entry.
    let pool = config.pool_len() as u64;
    let visible: Vec<bool> = (0..pool)
        .map(|i| {
            let updated = updated_ms(i, config.seed);
            updated_since_ms.is_none_or(|since| updated >= since)
                && as_of_ms.is_none_or(|as_of| updated <= as_of)
        })
        .collect();
    (0..config.total)
        .filter(|&i| visible[(i % pool) as usize])
        .collect()
}

/// `updated_at` of pool entry `pool_index`.
fn updated_ms(pool_index: u64, seed: u64) -> i64 {
    Head::draw(&mut Rng::for_record(pool_index, seed)).updated_ms
}

/// The instants behind the timestamp fields of the record at dataset offset `index`.
pub fn record_times(index: u64, config: &DataConfig) -> RecordTimes {
    let head = Head::draw(&mut Rng::for_record(config.pool_index(index), config.seed));
    RecordTimes {
        created_at_ms: head.created_ms,
        updated_at_ms: head.updated_ms,
        published_at_ms: (head.created_ms + HOUR_MS) / 1000 * 1000,
    }
}

/// The distinct records of a data set as compact JSON, each without its leading `{"id":N`.
pub struct Pool {
    config: DataConfig,
    entries: Vec<Box<[u8]>>,
    /// `updated_at` of each entry, in milliseconds since the epoch, for the server's filters.
    updated_ms: Vec<i64>,
}

impl fmt::Debug for Pool {
    /// Sizes, not the hundred megabytes of JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.config)
            .field("len", &self.len())
            .field("byte_len", &self.byte_len())
            .finish()
    }
}

impl Pool {
    /// Generates the [`DataConfig::pool_len`] distinct records on all cores; CPU-bound (half a
    /// second for the default 4,000 records on two cores, release build), so keep it off the
    /// async runtime's worker threads.
    pub fn build(config: &DataConfig) -> Pool {
        let len = config.pool_len();
        let threads = thread::available_parallelism()
            .map_or(1, NonZeroUsize::get)
            .min(len);
        let chunk = len.div_ceil(threads);
        let entries = thread::scope(|scope| {
            let workers: Vec<_> = (0..len)
                .step_by(chunk)
                .map(|start| {
                    let indices = start as u64..(start + chunk).min(len) as u64;
                    scope.spawn(move || {
                        indices
                            .map(|i| pool_entry(i, config).into_boxed_slice())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut entries = Vec::with_capacity(len);
            for worker in workers {
                entries.extend(
                    worker
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                );
            }
            entries
        });
        let updated_ms = (0..len as u64)
            .map(|i| updated_ms(i, config.seed))
            .collect();
        Pool {
            config: config.clone(),
            entries,
            updated_ms,
        }
    }

    /// The configuration the pool was built for.
    pub fn config(&self) -> &DataConfig {
        &self.config
    }

    /// Number of distinct records.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the pool is empty (never: it holds at least one record).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held by the pool: the records without their `{"id":N` prefix.
    pub fn byte_len(&self) -> usize {
        self.entries.iter().map(|e| e.len()).sum()
    }

    /// An upper bound of the bytes [`Pool::write_record`] appends for `indices`, without the
    /// commas between records; for sizing a page buffer.
    pub fn records_len(&self, indices: Range<u64>) -> usize {
        const ID_PREFIX_MAX: usize = r#"{"id":"#.len() + 20;
        indices.map(|i| self.entry(i).len() + ID_PREFIX_MAX).sum()
    }

    /// The exact number of bytes [`Pool::write_record`] appends for dataset offset `index`;
    /// for a `Content-Length` computed before the page is written.
    pub fn record_len(&self, index: u64) -> usize {
        r#"{"id":"#.len() + decimal_len(ID_BASE + index) + self.entry(index).len()
    }

    /// Appends the compact JSON of the record at dataset offset `index` to `out`.
    pub fn write_record(&self, index: u64, out: &mut Vec<u8>) {
        write_record(out, index, self.entry(index));
    }

    /// [`record_updated_at_ms`] of dataset offset `index`, looked up (computed when the pool
    /// was built).
    pub fn updated_at_ms(&self, index: u64) -> i64 {
        // As long as `entries` (`pool_len` is at least 1), so the remainder is in range.
        self.updated_ms[(index % self.updated_ms.len() as u64) as usize]
    }

    fn entry(&self, index: u64) -> &[u8] {
        // `entries` is never empty (`pool_len` is at least 1), so the remainder is in range.
        &self.entries[(index % self.entries.len() as u64) as usize]
    }
}

/// `{"id":N` followed by a pool entry, which starts with `,"product_id":`.
fn write_record(out: &mut Vec<u8>, index: u64, entry: &[u8]) {
    out.extend_from_slice(br#"{"id":"#);
    push_decimal(out, ID_BASE + index);
    out.extend_from_slice(entry);
}

/// Digits of `n` in decimal.
fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// Appends `n` in decimal, without going through the formatting machinery.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Pool entry `pool_index`: the record's compact JSON with `{` replaced by `,` (it has no "id").
fn pool_entry(pool_index: u64, config: &DataConfig) -> Vec<u8> {
    let variant = Variant::generate(pool_index, config);
    // Serialising plain structs (string keys, no maps, no custom impls) into memory cannot fail.
    let mut json = serde_json::to_vec(&variant).expect("serialising a Variant cannot fail");
    debug_assert_eq!(json.first(), Some(&b'{'));
    json[0] = b',';
    if config.extra_fields > 0 {
        json.pop();
        for n in 1..=config.extra_fields {
            json.extend_from_slice(
                format!(r#","extra_{n}":{{"since":"day two","rank":{pool_index},"on":true}}"#)
                    .as_bytes(),
            );
        }
        json.push(b'}');
    }
    json
}

// ---------------------------------------------------------------------------------- vocabulary

use vocabulary::*;

/// The small vocabularies records are made of (kept compact: rustfmt would give each word a line).
#[rustfmt::skip]
mod vocabulary {
    pub(super) const BRANDS: [&str; 12] = [
        "Acme", "Northwind", "Contoso", "Fabrikam", "Tailspin", "Wingtip", "Litware", "Proseware",
        "Adatum", "Lucerne", "Margie", "Trey",
    ];
    pub(super) const CATEGORIES: [&str; 12] = [
        "t-shirts", "hoodies", "sneakers", "jeans", "jackets", "socks", "backpacks", "caps",
        "dresses", "shorts", "boots", "scarves",
    ];
    pub(super) const COLORS: [&str; 12] = [
        "Black", "White", "Navy", "Red", "Forest Green", "Sand", "Grey Melange", "Burgundy",
        "Sky Blue", "Olive", "Charcoal", "Mustard",
    ];
    pub(super) const SIZES: [&str; 12] =
        ["XS", "S", "M", "L", "XL", "XXL", "36", "38", "40", "42", "44", "46"];
    pub(super) const MATERIALS: [&str; 4] =
        ["cotton", "organic cotton", "polyester", "recycled polyester"];
    pub(super) const STATUSES: [&str; 5] = ["active", "active", "active", "draft", "archived"];
    pub(super) const BASE_PRICES: [f64; 12] =
        [9.99, 14.99, 19.99, 24.99, 29.99, 39.99, 49.99, 59.99, 79.99, 99.99, 129.0, 149.0];
    /// (country, currency, tax rate, units of the currency per euro)
    pub(super) const MARKETS: [(&str, &str, f64, f64); 12] = [
        ("DE", "EUR", 0.19, 1.0), ("FR", "EUR", 0.20, 1.0), ("NL", "EUR", 0.21, 1.0),
        ("AT", "EUR", 0.20, 1.0), ("IT", "EUR", 0.22, 1.0), ("ES", "EUR", 0.21, 1.0),
        ("GB", "GBP", 0.20, 0.86), ("CH", "CHF", 0.081, 0.95), ("SE", "SEK", 0.25, 11.4),
        ("DK", "DKK", 0.25, 7.46), ("PL", "PLN", 0.23, 4.3), ("US", "USD", 0.0, 1.08),
    ];
    /// (price list, factor on the base price)
    pub(super) const PRICE_LISTS: [(&str, f64); 2] = [("retail", 1.0), ("outlet", 0.7)];
    /// (id, name, country): warehouses and a store network.
    pub(super) const LOCATIONS: [(&str, &str, &str); 24] = [
        ("WH-BER-01", "Berlin Warehouse", "DE"), ("WH-HAM-02", "Hamburg Hub", "DE"),
        ("WH-PAR-01", "Paris Nord", "FR"), ("WH-AMS-01", "Amsterdam West", "NL"),
        ("WH-MIL-01", "Milano Logistica", "IT"), ("WH-MAD-01", "Madrid Sur", "ES"),
        ("WH-LON-01", "London Park Royal", "GB"), ("WH-ZRH-01", "Zurich Airport", "CH"),
        ("ST-BER-11", "Store Berlin Mitte", "DE"), ("ST-MUC-03", "Store Munich", "DE"),
        ("ST-PAR-07", "Store Paris Marais", "FR"), ("ST-VIE-02", "Store Vienna", "AT"),
        ("ST-BER-01", "Store Berlin 1", "DE"), ("ST-BER-02", "Store Berlin 2", "DE"),
        ("ST-HAM-01", "Store Hamburg 1", "DE"), ("ST-HAM-02", "Store Hamburg 2", "DE"),
        ("ST-MUC-01", "Store Munich 1", "DE"), ("ST-MUC-02", "Store Munich 2", "DE"),
        ("ST-CGN-01", "Store Cologne 1", "DE"), ("ST-CGN-02", "Store Cologne 2", "DE"),
        ("ST-FRA-01", "Store Frankfurt 1", "DE"), ("ST-FRA-02", "Store Frankfurt 2", "DE"),
        ("ST-PAR-01", "Store Paris 1", "FR"), ("ST-PAR-02", "Store Paris 2", "FR"),
    ];
    pub(super) const LOCALES: [&str; 8] =
        ["de-DE", "en-GB", "fr-FR", "it-IT", "es-ES", "nl-NL", "sv-SE", "pl-PL"];
    pub(super) const WORDS: [&str; 62] = [
        "soft", "breathable", "fabric", "regular", "fit", "relaxed", "slim", "classic", "everyday",
        "durable", "lightweight", "premium", "sustainable", "recycled", "organic", "stretch",
        "comfortable", "machine", "washable", "ribbed", "crew", "neck", "long", "sleeve", "short",
        "sleeve", "zip", "pocket", "hood", "adjustable", "waterproof", "windproof", "insulated",
        "reinforced", "seams", "timeless", "design", "versatile", "layering", "piece", "made", "in",
        "portugal", "certified", "fair", "trade", "responsibly", "sourced", "limited", "edition",
        "seasonal", "collection", "pair", "with", "denim", "perfect", "for", "travel", "and",
        "weekend", "city", "walks",
    ];
    pub(super) const ATTR_KEYS: [&str; 18] = [
        "material", "care", "fit", "pattern", "neckline", "sleeve_length", "closure", "season",
        "origin", "certification", "collection", "gender", "age_group", "style", "occasion",
        "lining", "thickness", "transparency",
    ];
    pub(super) const ATTR_SOURCES: [&str; 4] = ["pim", "supplier_feed", "manual", "ai_enrichment"];
    pub(super) const MEDIA_SIZES: [(&str, u32); 5] =
        [("thumb", 160), ("small", 400), ("medium", 800), ("large", 1200), ("zoom", 2400)];
    pub(super) const VIEWS: [&str; 6] = ["front", "back", "side", "detail", "model", "flat"];
}

/// A fixed set of marketing sentences: the copy of one product repeats across its variants and
/// locales, as it does in real catalogues (and is what makes the records compress well).
static SENTENCES: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut rng = Rng(7);
    (0..48)
        .map(|_| {
            let words: Vec<&str> = (0..rng.range(6, 14)).map(|_| rng.pick(&WORDS)).collect();
            let mut sentence = words.join(" ");
            sentence[..1].make_ascii_uppercase();
            sentence.push('.');
            sentence
        })
        .collect()
});

// ----------------------------------------------------------------------------------- records

/// One record as the API sends it, minus the `"id"` the server puts in front. Field order is
/// the JSON order.
#[derive(Serialize)]
struct Variant {
    product_id: u64,
    sku: String,
    barcode: String,
    title: String,
    status: &'static str,
    price: Money,
    compare_at_price: Money,
    cost: f64,
    taxable: bool,
    weight: Weight,
    /// Epoch milliseconds.
    created_at: i64,
    /// ISO-8601 with milliseconds and `Z`.
    updated_at: String,
    /// `"YYYY-MM-DD HH:MM:SS"`, UTC without a zone.
    published_at: String,
    /// `"YYYY-MM-DD"`.
    available_from: String,
    options: [NameValue; 2],
    tags: BTreeSet<String>,
    prices: Vec<Price>,
    inventory: Vec<Stock>,
    attributes: Vec<Attribute>,
    media: Vec<Media>,
    translations: Vec<Translation>,
}

#[derive(Serialize)]
struct Money {
    amount: String,
    currency: &'static str,
}

#[derive(Serialize)]
struct Weight {
    value: f64,
    unit: &'static str,
}

#[derive(Serialize)]
struct NameValue {
    name: &'static str,
    value: &'static str,
}

#[derive(Serialize)]
struct Price {
    market: &'static str,
    currency: &'static str,
    amount: String,
    tax_rate: f64,
    valid_from: String,
    valid_to: Option<String>,
    price_list: String,
    includes_tax: bool,
    rounding: &'static str,
    min_quantity: u32,
    max_quantity: Option<u32>,
    customer_group: Option<String>,
    channel: &'static str,
    source: &'static str,
}

#[derive(Serialize)]
struct Stock {
    location_id: &'static str,
    location_name: &'static str,
    country: &'static str,
    available: u64,
    reserved: u64,
    incoming: u64,
    bin: String,
    /// Epoch milliseconds, unlike the record's own `updated_at`.
    updated_at: i64,
    tracked: bool,
    inventory_policy: &'static str,
    requires_shipping: bool,
    fulfillment_service: &'static str,
    safety_stock: u64,
    unit: &'static str,
    harmonized_system_code: Option<String>,
    country_of_origin: Option<String>,
    lot: Option<String>,
}

#[derive(Serialize)]
struct Attribute {
    key: &'static str,
    value: &'static str,
    locale: &'static str,
    source: &'static str,
    confidence: f64,
    updated_at: String,
}

#[derive(Serialize)]
struct Media {
    id: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    position: u64,
    alt: String,
    url: String,
    renditions: Vec<Rendition>,
    /// `"YYYY-MM-DD HH:MM:SS"`.
    uploaded_at: String,
    mime_type: &'static str,
    status: &'static str,
    color_space: &'static str,
    focal_point: Option<String>,
    license: &'static str,
    photographer: Option<String>,
    tags: Vec<String>,
}

#[derive(Serialize)]
struct Rendition {
    size: &'static str,
    width: u32,
    height: u32,
    url: String,
    format: &'static str,
}

#[derive(Serialize)]
struct Translation {
    locale: &'static str,
    title: String,
    description: String,
    bullets: Vec<String>,
    seo: Seo,
}

#[derive(Serialize)]
struct Seo {
    slug: String,
    meta_title: String,
}

/// The first draws of a record: what it is and when. [`record_times`] needs only these.
#[derive(Clone, Copy)]
struct Head {
    brand: &'static str,
    category: &'static str,
    color: &'static str,
    size: &'static str,
    created_ms: i64,
    updated_ms: i64,
}

impl Head {
    fn draw(rng: &mut Rng) -> Head {
        let brand = rng.pick(&BRANDS);
        let category = rng.pick(&CATEGORIES);
        let color = rng.pick(&COLORS);
        let size = rng.pick(&SIZES);
        let created_ms = EPOCH_2022_MS + rng.below(SPAN_MS) as i64;
        let updated_ms = created_ms + rng.below(90 * DAY_MS as u64) as i64;
        Head {
            brand,
            category,
            color,
            size,
            created_ms,
            updated_ms,
        }
    }
}

impl Variant {
    fn generate(pool_index: u64, config: &DataConfig) -> Variant {
        let mut rng = Rng::for_record(pool_index, config.seed);
        let product = Product::draw(pool_index, &mut rng);
        let mut v = product.variant(&mut rng);
        // Compact JSON bytes so far, including the `"id":N,` the server adds.
        let goal = (config.target_bytes as f64 * rng.uniform(0.75, 1.25)) as usize;
        let mut bytes = json_len(&v) + r#""id":,"#.len() + json_len(&product.variant_id);

        for (list, factor) in PRICE_LISTS {
            for market in MARKETS {
                push_counted(
                    &mut v.prices,
                    product.price(list, factor, market),
                    &mut bytes,
                );
            }
        }
        for location in LOCATIONS {
            push_counted(
                &mut v.inventory,
                product.stock(location, &mut rng),
                &mut bytes,
            );
        }
        // Fill the rest of the budget round-robin: attribute, media, translation, attribute.
        let mut copy = ProductCopy::default();
        for k in 0.. {
            if bytes >= goal {
                break;
            }
            let fits = match k % 4 {
                1 => {
                    let media = product.media(v.media.len() as u64 + 1);
                    push_within(&mut v.media, media, &mut bytes, goal)
                }
                2 => {
                    let n = v.translations.len();
                    // Product copy is written a few times per variant, then localised.
                    if n.is_multiple_of(4) {
                        copy = ProductCopy::write(&mut rng);
                    }
                    let translation = product.translation(LOCALES[n % LOCALES.len()], &copy);
                    push_within(&mut v.translations, translation, &mut bytes, goal)
                }
                _ => {
                    let attribute = product.attribute(k, &mut rng);
                    push_within(&mut v.attributes, attribute, &mut bytes, goal)
                }
            };
            if !fits {
                break;
            }
        }
        v
    }
}

/// What a record is about, drawn first; every part of the record is built from it.
struct Product {
    head: Head,
    variant_id: u64,
    product_id: u64,
    base_price: f64,
    /// The category without its plural `s`: `"hoodie"`.
    singular: &'static str,
    /// `brand/category/color`, for image URLs and SEO slugs.
    slug: String,
    updated_iso: String,
}

impl Product {
    fn draw(pool_index: u64, rng: &mut Rng) -> Product {
        let head = Head::draw(rng);
        let Head {
            brand,
            category,
            color,
            ..
        } = head;
        Product {
            head,
            variant_id: ID_BASE + pool_index,
            product_id: 500_000 + pool_index / 8,
            base_price: rng.pick(&BASE_PRICES),
            singular: category.strip_suffix('s').unwrap_or(category),
            slug: format!(
                "{}/{category}/{}",
                brand.to_lowercase(),
                color.to_lowercase().replace(' ', "-")
            ),
            updated_iso: iso_millis(head.updated_ms),
        }
    }

    /// The record's scalar fields, with empty arrays.
    fn variant(&self, rng: &mut Rng) -> Variant {
        let Head {
            brand,
            category,
            color,
            size,
            created_ms,
            ..
        } = self.head;
        let mut tags: BTreeSet<String> = (0..6).map(|_| rng.pick(&WORDS).to_string()).collect();
        tags.extend([category.to_string(), brand.to_lowercase()]);
        let sku_number = self.product_id % 100_000;
        Variant {
            product_id: self.product_id,
            sku: format!(
                "{}-{}-{sku_number:05}-{}-{size}",
                abbrev(brand),
                abbrev(category),
                abbrev(color)
            ),
            barcode: format!("40{}", rng.range(10_000_000_000, 100_000_000_000)),
            title: format!("{brand} {} - {color} / {size}", title_case(self.singular)),
            status: rng.pick(&STATUSES),
            price: Money {
                amount: format!("{:.2}", self.base_price),
                currency: "EUR",
            },
            compare_at_price: Money {
                amount: format!("{:.2}", self.base_price * 1.25),
                currency: "EUR",
            },
            cost: round2(self.base_price * rng.uniform(0.25, 0.45)),
            taxable: true,
            weight: Weight {
                value: round2(rng.uniform(0.1, 2.0)),
                unit: "kg",
            },
            created_at: created_ms,
            updated_at: self.updated_iso.clone(),
            published_at: plain_timestamp(created_ms + HOUR_MS),
            available_from: plain_date(created_ms + DAY_MS),
            options: [
                NameValue {
                    name: "Color",
                    value: color,
                },
                NameValue {
                    name: "Size",
                    value: size,
                },
            ],
            tags,
            prices: Vec::new(),
            inventory: Vec::new(),
            attributes: Vec::new(),
            media: Vec::new(),
            translations: Vec::new(),
        }
    }

    fn price(
        &self,
        list: &str,
        factor: f64,
        market: (&'static str, &'static str, f64, f64),
    ) -> Price {
        let (market, currency, tax_rate, fx) = market;
        Price {
            market,
            currency,
            amount: format!("{:.2}", self.base_price * fx * factor),
            tax_rate,
            valid_from: plain_date(self.head.created_ms),
            valid_to: None,
            price_list: format!("pl-{}-{list}", market.to_lowercase()),
            includes_tax: market != "US",
            rounding: "none",
            min_quantity: 1,
            max_quantity: None,
            customer_group: None,
            channel: "web",
            source: "erp",
        }
    }

    fn stock(&self, location: (&'static str, &'static str, &'static str), rng: &mut Rng) -> Stock {
        let (location_id, location_name, country) = location;
        let shelf = char::from(b"ABCD"[(self.product_id % 4) as usize]);
        Stock {
            location_id,
            location_name,
            country,
            available: if rng.unit() < 0.6 {
                0
            } else {
                rng.range(1, 10)
            },
            reserved: 0,
            incoming: 0,
            bin: format!("{shelf}-{:02}", self.product_id % 20 + 1),
            updated_at: self.head.updated_ms,
            tracked: true,
            inventory_policy: "deny",
            requires_shipping: true,
            fulfillment_service: "manual",
            safety_stock: 0,
            unit: "piece",
            harmonized_system_code: None,
            country_of_origin: None,
            lot: None,
        }
    }

    /// Attribute number `k` of the fill (`k` counts all fill items).
    fn attribute(&self, k: usize, rng: &mut Rng) -> Attribute {
        let key = ATTR_KEYS[k % ATTR_KEYS.len()];
        Attribute {
            key,
            value: if key == "material" {
                rng.pick(&MATERIALS)
            } else {
                WORDS[(k * 7 + self.product_id as usize) % 24]
            },
            locale: LOCALES[(k / ATTR_KEYS.len()) % LOCALES.len()],
            source: if k.is_multiple_of(5) {
                rng.pick(&ATTR_SOURCES)
            } else {
                ATTR_SOURCES[0]
            },
            confidence: if k.is_multiple_of(3) { 0.95 } else { 1.0 },
            updated_at: self.updated_iso.clone(),
        }
    }

    /// The image at `position` (from 1), with its renditions.
    fn media(&self, position: u64) -> Media {
        let Head {
            brand,
            color,
            created_ms,
            ..
        } = self.head;
        let view = VIEWS[(position as usize - 1) % VIEWS.len()];
        let image = format!(
            "https://cdn.example.com/images/{}/{view}_{position}",
            self.slug
        );
        let rendition = |(size, width)| Rendition {
            size,
            width,
            height: width,
            url: format!("{image}_{width}x{width}.webp"),
            format: "webp",
        };
        Media {
            id: self.variant_id * 100 + position,
            kind: "image",
            position,
            alt: format!(
                "{brand} {} in {}, {view} view",
                self.singular,
                color.to_lowercase()
            ),
            url: format!("{image}.jpg"),
            renditions: MEDIA_SIZES.into_iter().map(rendition).collect(),
            uploaded_at: plain_timestamp(created_ms + position as i64 * 60_000),
            mime_type: "image/jpeg",
            status: "ready",
            color_space: "sRGB",
            focal_point: None,
            license: "internal",
            photographer: None,
            tags: Vec::new(),
        }
    }

    fn translation(&self, locale: &'static str, copy: &ProductCopy) -> Translation {
        let Head {
            brand,
            category,
            color,
            size,
            ..
        } = self.head;
        Translation {
            locale,
            title: format!("{brand} {} {color} {size}", self.singular),
            description: copy.description.clone(),
            bullets: copy.bullets.clone(),
            seo: Seo {
                slug: format!("{}-{}", self.slug, size.to_lowercase()),
                meta_title: format!("{brand} {category} | {color}"),
            },
        }
    }
}

/// Marketing copy shared by a few translations of a record.
#[derive(Default)]
struct ProductCopy {
    description: String,
    bullets: Vec<String>,
}

impl ProductCopy {
    fn write(rng: &mut Rng) -> ProductCopy {
        ProductCopy {
            description: prose(rng, 20, 45),
            bullets: (0..4).map(|_| prose(rng, 4, 9)).collect(),
        }
    }
}

/// Pushes `item` and adds its bytes to `bytes`.
fn push_counted<T: Serialize>(list: &mut Vec<T>, item: T, bytes: &mut usize) {
    *bytes += item_len(list, &item);
    list.push(item);
}

/// Pushes `item` unless it would overshoot `goal` by more than half its own size, so a record
/// ends at the item boundary nearest to its goal and the average size is unbiased. Returns
/// whether it pushed.
fn push_within<T: Serialize>(list: &mut Vec<T>, item: T, bytes: &mut usize, goal: usize) -> bool {
    let len = item_len(list, &item);
    if *bytes + len / 2 > goal {
        return false;
    }
    *bytes += len;
    list.push(item);
    true
}

/// Bytes that appending `item` adds to the JSON of `list`: the item and a comma if needed.
fn item_len<T: Serialize>(list: &[T], item: &T) -> usize {
    json_len(item) + usize::from(!list.is_empty())
}

/// Length of `value` as compact JSON, without building it.
fn json_len(value: &impl Serialize) -> usize {
    /// An `io::Write` that only counts.
    struct Count(usize);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // `Count` never fails, and these plain structs always serialise.
    serde_json::to_writer(&mut count, value).expect("serialising to a counter cannot fail");
    count.0
}

/// About `min..max` words of whole sentences from [`SENTENCES`].
fn prose(rng: &mut Rng, min: u64, max: u64) -> String {
    let goal = rng.range(min, max) as usize;
    let (mut out, mut words) = (String::new(), 0);
    while words < goal {
        let sentence = &SENTENCES[rng.index(SENTENCES.len())];
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(sentence);
        words += sentence.split(' ').count();
    }
    out
}

/// First three letters, upper-cased: `"Forest Green"` → `"FOR"`.
fn abbrev(word: &str) -> String {
    word.chars().take(3).collect::<String>().to_uppercase()
}

/// Upper-cases the first letter of each run of letters: `"t-shirt"` → `"T-Shirt"`.
fn title_case(text: &str) -> String {
    let mut after_letter = false;
    text.chars()
        .map(|c| {
            let out = if after_letter {
                c
            } else {
                c.to_ascii_uppercase()
            };
            after_letter = c.is_alphabetic();
            out
        })
        .collect()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

// --------------------------------------------------------------------------------------- PRNG

/// splitmix64: tiny, fast, and good enough for test data; the whole stream is a function of
/// its 64-bit state.
struct Rng(u64);

impl Rng {
    /// The stream of pool entry `pool_index` under `seed`.
    fn for_record(pool_index: u64, seed: u64) -> Rng {
        Rng(seed.wrapping_mul(1_000_003).wrapping_add(pool_index))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` by multiply-shift (bias of order n / 2^64, irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// A uniformly chosen index into a non-empty slice of `len` items.
    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// A uniformly chosen element of a non-empty slice.
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.index(items.len())]
    }
}

// -------------------------------------------------------------------------------- date format

/// A UTC instant split into calendar fields.
struct Utc {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    milli: u32,
}

impl Utc {
    fn from_ms(ms: i64) -> Utc {
        let (days, ms_of_day) = (ms.div_euclid(DAY_MS), ms.rem_euclid(DAY_MS) as u32);
        // Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's civil_from_days).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let mp = (5 * day_of_year + 2) / 153; // month counted from March
        let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        Utc {
            year: year_of_era + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: ms_of_day / 3_600_000,
            minute: ms_of_day / 60_000 % 60,
            second: ms_of_day / 1000 % 60,
            milli: ms_of_day % 1000,
        }
    }
}

/// An instant in milliseconds since the Unix epoch as records write `updated_at`: ISO-8601 in
/// UTC with milliseconds and `Z`, e.g. `"2024-02-13T14:04:10.045Z"`; also a valid
/// `updated_since` value.
pub fn iso_millis(ms: i64) -> String {
    let t = Utc::from_ms(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.milli
    )
}

/// `"2024-02-13 14:04:10"`
fn plain_timestamp(ms: i64) -> String {
    let t = Utc::from_ms(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// `"2024-02-13"`
fn plain_date(ms: i64) -> String {
    let t = Utc::from_ms(ms);
    format!("{:04}-{:02}-{:02}", t.year, t.month, t.day)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's days_from_civil), the
/// inverse of [`Utc::from_ms`]'s calendar step.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// An RFC 3339 timestamp (`YYYY-MM-DDTHH:MM:SS`, an optional fraction of 1 to 9 digits, then
/// `Z` or a `±HH:MM` offset; `T` and `Z` in either case) as seconds since the Unix epoch and
/// nanoseconds within that second, in UTC. The error says what is wrong, quoting the text.
pub(crate) fn parse_rfc3339(text: &str) -> Result<(i64, u32), String> {
    let bad = |why: &str| format!("{text:?} is not an RFC 3339 timestamp ({why})");
    let b = text.as_bytes();
    let digits = |range: Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')))
    };
    let at = |i: usize, expected: &[u8]| b.get(i).is_some_and(|c| expected.contains(c));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt") && at(13, b":") && at(16, b":")) {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        digits(0..4),
        digits(5..7),
        digits(8..10),
        digits(11..13),
        digits(14..16),
        digits(17..19),
    ) else {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=12).contains(&month) || !(1..=month_days).contains(&day) {
        return Err(bad("no such date"));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(bad("no such time of day"));
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if at(i, b".") {
        let start = i + 1;
        let mut end = start;
        while b.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        let count = end - start;
        if !(1..=9).contains(&count) {
            return Err(bad("a fraction has 1 to 9 digits"));
        }
        nanos = digits(start..end).unwrap_or(0) * 10u32.pow((9 - count) as u32);
        i = end;
    }
    let offset_secs: i64 = match b.get(i) {
        Some(b'Z' | b'z') if b.len() == i + 1 => 0,
        Some(&sign @ (b'+' | b'-')) if b.len() == i + 6 && at(i + 3, b":") => {
            let (Some(hours), Some(minutes)) = (digits(i + 1..i + 3), digits(i + 4..i + 6)) else {
                return Err(bad("expected an offset ±HH:MM"));
            };
            if hours > 23 || minutes > 59 {
                return Err(bad("no such offset"));
            }
            let secs = i64::from(hours * 3600 + minutes * 60);
            if sign == b'+' { secs } else { -secs }
        }
        _ => return Err(bad("expected Z or an offset ±HH:MM after the time")),
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    Ok((secs, nanos))
}

/// An RFC 3339 timestamp (as `updated_since` takes it: `Z` or an offset, 0 to 9 fractional
/// digits) in milliseconds since the Unix epoch, rounded down to the millisecond; for
/// [`MockConfig::as_of`](crate::MockConfig::as_of) and tests.
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, String> {
    let (secs, nanos) = parse_rfc3339(text)?;
    Ok(secs * 1000 + i64::from(nanos / 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(total: u64, pool: usize) -> DataConfig {
        DataConfig {
            total,
            pool,
            ..DataConfig::default()
        }
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(iso_millis(EPOCH_2022_MS), "2022-01-01T00:00:00.000Z");
        assert_eq!(iso_millis(1_707_833_050_045), "2024-02-13T14:04:10.045Z");
        assert_eq!(plain_timestamp(1_709_251_199_999), "2024-02-29 23:59:59");
        assert_eq!(plain_date(1_709_251_200_000), "2024-03-01");
        assert_eq!(iso_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(plain_date(951_782_400_000), "2000-02-29");
    }

    #[test]
    fn parses_rfc3339_timestamps() {
        let ms = |text| parse_rfc3339_ms(text);
        assert_eq!(ms("2024-02-13T14:04:10.045Z"), Ok(1_707_833_050_045));
        assert_eq!(ms("2024-02-13T14:04:10.045+00:00"), Ok(1_707_833_050_045));
        assert_eq!(ms("2024-02-13t16:04:10.045+02:00"), Ok(1_707_833_050_045));
        assert_eq!(ms("2024-02-13T13:34:10.045-00:30"), Ok(1_707_833_050_045));
        assert_eq!(ms("2024-02-13T14:04:10Z"), Ok(1_707_833_050_000));
        assert_eq!(ms("2024-02-13T14:04:10.0451999z"), Ok(1_707_833_050_045));
        assert_eq!(
            parse_rfc3339("2024-02-13T14:04:10.123456789Z"),
            Ok((1_707_833_050, 123_456_789))
        );
        assert_eq!(
            parse_rfc3339("2024-02-13T14:04:10.5Z"),
            Ok((1_707_833_050, 500_000_000))
        );
        assert_eq!(ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(ms("1969-12-31T23:59:59.999Z"), Ok(-1));
        assert_eq!(ms("2000-02-29T00:00:00Z"), Ok(951_782_400_000));
        assert_eq!(ms("2024-02-29T23:59:59.999Z"), Ok(1_709_251_199_999));
        for ms in [0, EPOCH_2022_MS, 1_707_833_050_045, 4_102_444_800_000] {
            assert_eq!(parse_rfc3339_ms(&iso_millis(ms)), Ok(ms));
        }
        for bad in [
            "",
            "2024-02-13",
            "2024-02-13T14:04:10",
            "2024-02-13 14:04:10Z",
            "2024-02-13T14:04:10.Z",
            "2024-02-13T14:04:10.0123456789Z",
            "2024-02-30T14:04:10Z",
            "2023-02-29T14:04:10Z",
            "2024-13-01T00:00:00Z",
            "2024-02-13T24:00:00Z",
            "2024-02-13T14:60:00Z",
            "2024-02-13T14:04:10+0100",
            "2024-02-13T14:04:10+24:00",
            "2024-02-13T14:04:10Zjunk",
            "+024-02-13T14:04:10Z",
            "2024-02-13T14:04:10 00:00",
            "２024-02-13T14:04:10Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn updated_at_lookups_agree() {
        let config = small(50, 7);
        let pool = Pool::build(&config);
        for index in 0..50 {
            let updated = record_times(index, &config).updated_at_ms;
            assert_eq!(record_updated_at_ms(index, &config), updated);
            assert_eq!(pool.updated_at_ms(index), updated);
        }
        assert_eq!(
            visible_offsets(&config, None, None),
            (0..50).collect::<Vec<_>>()
        );
        let times: Vec<i64> = (0..7).map(|i| record_updated_at_ms(i, &config)).collect();
        let mut sorted = times.clone();
        sorted.sort_unstable();
        let (since, as_of) = (sorted[2], sorted[5]);
        let expected: Vec<u64> = (0..50)
            .filter(|&i| (since..=as_of).contains(&times[(i % 7) as usize]))
            .collect();
        assert_eq!(visible_offsets(&config, Some(since), Some(as_of)), expected);
        // Inclusive at both ends: four distinct pool entries, each seven or eight times.
        assert!((28..=32).contains(&expected.len()), "{}", expected.len());
    }

    #[test]
    fn decimal_lengths() {
        for n in [0, 1, 9, 10, 99, 100, 10_000_000, 99_999_999, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(decimal_len(n), out.len(), "{n}");
        }
    }

    #[test]
    fn records_are_deterministic_and_depend_on_seed_and_index() {
        let config = small(100, 50);
        assert_eq!(pool_entry(7, &config), pool_entry(7, &config));
        assert_ne!(pool_entry(7, &config), pool_entry(8, &config));
        let other_seed = DataConfig {
            seed: 43,
            ..config.clone()
        };
        assert_ne!(pool_entry(7, &config), pool_entry(7, &other_seed));
    }

    #[test]
    fn offsets_repeat_the_pool_with_their_own_id() {
        let config = small(100, 30);
        let (mut a, mut b) = (expected_record(5, &config), expected_record(35, &config));
        assert_eq!(a["id"], 10_000_005);
        assert_eq!(b["id"], 10_000_035);
        a["id"] = 0.into();
        b["id"] = 0.into();
        assert_eq!(a, b);
        assert_eq!(record_times(5, &config), record_times(35, &config));
    }

    #[test]
    fn pool_writes_what_expected_record_parses() {
        let config = small(10, 4);
        let pool = Pool::build(&config);
        assert_eq!(pool.len(), 4);
        for index in [0, 3, 4, 9] {
            let mut json = Vec::new();
            pool.write_record(index, &mut json);
            assert!(
                json.starts_with(
                    format!("{{\"id\":{},\"product_id\":", ID_BASE + index).as_bytes()
                )
            );
            assert!(json.len() <= pool.records_len(index..index + 1));
            assert_eq!(json.len(), pool.record_len(index));
            let parsed: serde_json::Value = serde_json::from_slice(&json).expect("valid JSON");
            assert_eq!(parsed, expected_record(index, &config));
        }
    }

    #[test]
    fn timestamp_fields_match_record_times() {
        let config = DataConfig::default();
        for index in [0, 1, 2, 999, 83_687] {
            let record = expected_record(index, &config);
            let times = record_times(index, &config);
            assert_eq!(record["created_at"], times.created_at_ms);
            assert_eq!(
                record["updated_at"],
                iso_millis(times.updated_at_ms).as_str()
            );
            assert_eq!(
                record["published_at"],
                plain_timestamp(times.published_at_ms).as_str()
            );
            assert_eq!(times.published_at_ms % 1000, 0);
            assert_eq!(
                record["available_from"],
                plain_date(times.created_at_ms + DAY_MS).as_str()
            );
            let span = EPOCH_2022_MS..EPOCH_2022_MS + SPAN_MS as i64;
            assert!(span.contains(&times.created_at_ms));
            assert!(times.updated_at_ms >= times.created_at_ms);
            let updated = record["updated_at"].as_str().expect("a string");
            assert_eq!(updated.len(), "2024-02-13T14:04:10.045Z".len());
            assert!(updated.ends_with('Z'));
        }
    }

    #[test]
    fn records_have_the_nested_shape() {
        let record = expected_record(3, &DataConfig::default());
        for (field, min_len) in [
            ("prices", 24),
            ("inventory", 24),
            ("attributes", 1),
            ("media", 1),
            ("translations", 1),
        ] {
            let items = record[field].as_array().expect("an array");
            assert!(items.len() >= min_len, "{field} has {} items", items.len());
        }
        assert_eq!(
            record["media"][0]["renditions"].as_array().map(Vec::len),
            Some(5)
        );
        assert!(record["sku"].is_string() && record["title"].is_string());
    }

    /// 2,000 records average `target_bytes` of compact JSON within ±3 %, each within ±25 % and
    /// a little (an item at most) more.
    #[test]
    fn sizes_average_the_target() {
        let config = small(100_000, 2_000);
        let pool = Pool::build(&config);
        let sizes: Vec<usize> = (0..2_000u64)
            .map(|i| {
                let mut json = Vec::new();
                pool.write_record(i, &mut json);
                json.len()
            })
            .collect();
        let target = config.target_bytes as f64;
        let average = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
        assert!(
            (average / target - 1.0).abs() < 0.03,
            "average {average:.0} bytes"
        );
        let (min, max) = (sizes.iter().min(), sizes.iter().max());
        assert!(min.is_some_and(|&m| m as f64 > 0.7 * target), "min {min:?}");
        assert!(
            max.is_some_and(|&m| (m as f64) < 1.3 * target),
            "max {max:?}"
        );
    }
}
