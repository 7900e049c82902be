//! The operator state in Redis: one hash field per (kind, upstream, server),
//! each holding a change and its version. A write goes through a script that
//! keeps the newer version and announces what it kept, so concurrent writers
//! (and an instance writing back after an outage) agree on the newest.

use std::collections::HashMap;
use std::num::NonZeroU32;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use super::ClusterError;
use super::config::Keys;
use crate::runtime::ChangeId;

/// When a change was made and by whom. Newest wins; the instance name breaks
/// a tie within one millisecond, so every instance picks the same winner.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    pub ms: u64,
    pub by: String,
}

impl Version {
    /// The change's name on every instance alike: FNV-1a of the version,
    /// which every instance holds the same. Two changes to one server
    /// sharing a name by chance is a 1 in 2^56 event.
    pub fn change_id(&self) -> ChangeId {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let bytes = self.ms.to_le_bytes().into_iter().chain(self.by.bytes());
        ChangeId::from_digest(bytes.fold(OFFSET, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(PRIME)
        }))
    }
}

/// An operator's change to one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// `deadline_unix_ms`: wall clock, so every instance reads the same moment.
    Drain {
        deadline_unix_ms: Option<u64>,
    },
    Enable,
    Disable,
    Weight {
        value: NonZeroU32,
    },
}

impl Change {
    /// Drain, enable and disable replace each other; a weight is separate,
    /// so a drain never undoes a weight change or the other way round.
    fn kind(&self) -> &'static str {
        match self {
            Change::Drain { .. } | Change::Enable | Change::Disable => ADMIN,
            Change::Weight { .. } => "weight",
        }
    }
}

/// The kind of the changes that set a server's operator state.
const ADMIN: &str = "admin";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub version: Version,
    pub change: Change,
}

/// The hash field an entry lives in: `kind/upstream/address`. Upstream names
/// have no `/` (validation), addresses are `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Field(String);

impl Field {
    pub fn of(upstream: &str, address: &str, change: &Change) -> Field {
        Field(format!("{}/{upstream}/{address}", change.kind()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it holds a drain, enable or disable (not a weight).
    fn is_admin(&self) -> bool {
        self.0.split('/').next() == Some(ADMIN)
    }

    /// `(upstream, address)`.
    pub fn server(&self) -> Option<(&str, &str)> {
        let mut parts = self.0.splitn(3, '/');
        let _kind = parts.next()?;
        Some((parts.next()?, parts.next()?))
    }
}

/// Writes the entry in ARGV[2] to field ARGV[1] unless the hash holds one at
/// least as new, then publishes `field\nentry`. Returns 1 when written.
const WRITE_NEWER: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local v = cjson.decode(current).version
  local ms = tonumber(ARGV[3])
  if v.ms > ms or (v.ms == ms and v.by >= ARGV[4]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[1] .. '\n' .. ARGV[2])
return 1
";

pub struct Store {
    keys: Keys,
    write_newer: redis::Script,
}

impl Store {
    pub fn new(keys: Keys) -> Store {
        Store {
            keys,
            write_newer: redis::Script::new(WRITE_NEWER),
        }
    }

    /// Every entry in the hash. One that does not parse (written by another
    /// version of sluice, or by hand) is logged and left out.
    pub async fn read_all(
        &self,
        conn: &mut ConnectionManager,
    ) -> Result<HashMap<Field, Entry>, ClusterError> {
        let raw: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&self.keys.state)
            .query_async(conn)
            .await?;
        Ok(raw
            .into_iter()
            .filter_map(|(field, value)| match serde_json::from_str(&value) {
                Ok(entry) => Some((Field(field), entry)),
                Err(error) => {
                    tracing::warn!(field, %error, "cluster: ignoring an unreadable entry");
                    None
                }
            })
            .collect())
    }

    /// Writes `entry` unless Redis already has one as new. Returns whether it
    /// was written (and announced).
    pub async fn write(
        &self,
        conn: &mut ConnectionManager,
        field: &Field,
        entry: &Entry,
    ) -> Result<bool, ClusterError> {
        let written: i64 = self
            .write_newer
            .key(&self.keys.state)
            .key(&self.keys.changes)
            .arg(field.as_str())
            .arg(encode(entry))
            .arg(entry.version.ms)
            .arg(&entry.version.by)
            .invoke_async(conn)
            .await?;
        Ok(written == 1)
    }
}

fn encode(entry: &Entry) -> String {
    // Plain data with string keys: serialising cannot fail.
    serde_json::to_string(entry).unwrap_or_default()
}

/// A message on the changes channel: `field\nentry`.
pub fn decode_message(payload: &str) -> Option<(Field, Entry)> {
    let (field, entry) = payload.split_once('\n')?;
    Some((Field(field.to_owned()), serde_json::from_str(entry).ok()?))
}

struct KnownEntry {
    entry: Entry,
    /// Applied to this instance's servers: false while the server is not in
    /// the running config, so a reload that adds it still gets the change.
    applied: bool,
}

/// What this instance knows of the hash: the newest entry seen per field,
/// from Redis or from its own API. It is how changes made while Redis was
/// away are written back, and why an entry is applied once, not on every
/// re-read (a file change that overrides it locally stays in force).
#[derive(Default)]
pub struct Known {
    entries: HashMap<Field, KnownEntry>,
    /// Made through this instance's API and not yet sent.
    unsent: Vec<Field>,
}

impl Known {
    /// A change made (and applied) here.
    pub fn record_local(&mut self, field: Field, entry: Entry) {
        self.entries.insert(
            field.clone(),
            KnownEntry {
                entry,
                applied: true,
            },
        );
        self.unsent.push(field);
    }

    /// Takes `entry` if it is newer than the one known; true when it was.
    pub fn merge(&mut self, field: &Field, entry: &Entry) -> bool {
        if self
            .entries
            .get(field)
            .is_some_and(|known| known.entry.version >= entry.version)
        {
            return false;
        }
        self.entries.insert(
            field.clone(),
            KnownEntry {
                entry: entry.clone(),
                applied: false,
            },
        );
        true
    }

    /// Entries not applied here yet.
    pub fn unapplied(&self) -> Vec<(Field, Entry)> {
        self.entries
            .iter()
            .filter(|(_, known)| !known.applied)
            .map(|(field, known)| (field.clone(), known.entry.clone()))
            .collect()
    }

    pub fn mark_applied(&mut self, field: &Field, version: &Version) {
        if let Some(known) = self.entries.get_mut(field)
            && known.entry.version == *version
        {
            known.applied = true;
        }
    }

    /// Entries Redis lacks or has an older version of: changes made here
    /// while it was away, or lost when it restarted empty.
    pub fn newer_than(&self, remote: &HashMap<Field, Entry>) -> Vec<(Field, Entry)> {
        self.entries
            .iter()
            .filter(|(field, known)| {
                remote
                    .get(*field)
                    .is_none_or(|r| r.version < known.entry.version)
            })
            .map(|(field, known)| (field.clone(), known.entry.clone()))
            .collect()
    }

    /// Every drain, enable or disable known, by server: `(upstream,
    /// address, id)`.
    pub fn admin_changes(&self) -> impl Iterator<Item = (&str, &str, ChangeId)> {
        self.entries
            .iter()
            .filter(|(field, _)| field.is_admin())
            .filter_map(|(field, known)| {
                let (upstream, address) = field.server()?;
                Some((upstream, address, known.entry.version.change_id()))
            })
    }

    /// The local changes to send now, each with its current entry.
    pub fn take_unsent(&mut self) -> Vec<(Field, Entry)> {
        let unsent = std::mem::take(&mut self.unsent);
        unsent
            .into_iter()
            .filter_map(|field| {
                let entry = self.entries.get(&field)?.entry.clone();
                Some((field, entry))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ms: u64, by: &str, change: Change) -> Entry {
        Entry {
            version: Version {
                ms,
                by: by.to_owned(),
            },
            change,
        }
    }

    #[test]
    fn newest_version_wins_and_the_instance_breaks_ties() {
        let field = Field::of("web", "10.0.0.1:80", &Change::Disable);
        let mut known = Known::default();
        assert!(known.merge(&field, &entry(10, "b", Change::Disable)));
        assert!(!known.merge(&field, &entry(9, "z", Change::Enable)));
        assert!(!known.merge(&field, &entry(10, "a", Change::Enable)));
        assert!(known.merge(&field, &entry(10, "c", Change::Enable)));
        assert_eq!(known.unapplied()[0].1.change, Change::Enable);
    }

    #[test]
    fn local_changes_newer_than_redis_are_written_back() {
        let drain = Change::Drain {
            deadline_unix_ms: None,
        };
        let field = Field::of("web", "10.0.0.1:80", &drain);
        let mut known = Known::default();
        known.record_local(field.clone(), entry(20, "a", drain));
        assert_eq!(known.take_unsent().len(), 1);
        assert!(known.take_unsent().is_empty(), "sent once");

        let mut remote = HashMap::new();
        assert_eq!(known.newer_than(&remote).len(), 1, "Redis lost it");
        remote.insert(field.clone(), entry(10, "b", Change::Enable));
        assert_eq!(known.newer_than(&remote).len(), 1, "Redis has older");
        remote.insert(field, entry(30, "b", Change::Enable));
        assert!(known.newer_than(&remote).is_empty(), "Redis has newer");
    }

    #[test]
    fn kinds_are_separate_fields_and_name_their_server() {
        let admin = Field::of("web", "[::1]:80", &Change::Disable);
        let weight = Field::of(
            "web",
            "[::1]:80",
            &Change::Weight {
                value: NonZeroU32::MIN,
            },
        );
        assert_ne!(admin, weight);
        assert_eq!(admin.server(), Some(("web", "[::1]:80")));
    }

    #[test]
    fn a_change_has_the_same_id_everywhere_and_another_one_does_not() {
        let version = |ms, by: &str| Version {
            ms,
            by: by.to_owned(),
        };
        let id = version(1_795_000_000_123, "lb1").change_id();
        assert_eq!(id, version(1_795_000_000_123, "lb1").change_id());
        assert_ne!(id, version(1_795_000_000_124, "lb1").change_id());
        assert_ne!(id, version(1_795_000_000_123, "lb2").change_id());
    }

    #[test]
    fn messages_round_trip() {
        let e = entry(
            5,
            "a",
            Change::Drain {
                deadline_unix_ms: Some(99),
            },
        );
        let field = Field::of("web", "h:1", &e.change);
        let payload = format!("{}\n{}", field.as_str(), encode(&e));
        assert_eq!(decode_message(&payload), Some((field, e)));
        assert_eq!(decode_message("no newline"), None);
    }
}
