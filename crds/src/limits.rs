//! Bounds of a `ScheduledJob`, shared by the CRD schema (`types.rs`, in
//! `#[schemars(length(max = …))]`) and validation (`validate.rs`); a test
//! compares them with the generated CRD. A module of its own so that the
//! types and the validation both import it and neither imports the other
//! for it. `raftcron_crds::validate::limits` re-exports it.

pub const SCHEDULE_MAX_LEN: usize = 256;
pub const TIME_ZONE_MAX_LEN: usize = 64;
pub const TIMEOUT_SECONDS_MAX: i64 = 604_800;
pub const MAX_ATTEMPTS_MAX: u32 = 100;
pub const BACKOFF_SECONDS_MAX: f64 = 86_400.0;
pub const MULTIPLIER_MAX: f64 = 10.0;
pub const HISTORY_LIMIT_MAX: u32 = 100;
/// `status.recentRuns` holds at most both history limits' worth of runs.
pub const STATUS_RECENT_RUNS_MAX: usize = 2 * HISTORY_LIMIT_MAX as usize;
/// `status.active`: runs executing or waiting for a retry. Only
/// `concurrencyPolicy: Allow` has more than one; a status listing more
/// is refused by the API server.
pub const STATUS_ACTIVE_MAX: usize = 1000;
/// `status.conditions`, one per type (only `Ready` so far).
pub const STATUS_CONDITIONS_MAX: usize = 8;
pub const URL_MAX_LEN: usize = 2048;
pub const HEADERS_MAX: usize = 64;
pub const HEADER_NAME_MAX_LEN: usize = 256;
pub const HEADER_VALUE_MAX_LEN: usize = 8192;
pub const BODY_MAX_BYTES: usize = 65_536;
pub const SUCCESS_CODES_MAX: usize = 64;
pub const COMMAND_MAX: usize = 256;
pub const ENV_MAX: usize = 128;
pub const ENV_NAME_MAX_LEN: usize = 256;
pub const SECRET_NAME_MAX_LEN: usize = 253;
pub const NAME_MAX_LEN: usize = 253;
pub const NAMESPACE_MAX_LEN: usize = 63;
