//! Process-wide settings for the numeric work on the CPU (descriptor, training), applied by the
//! binaries at the start of `main`.

/// The environment variable candle reads, once, when it starts the pool of threads that runs
/// its element-wise CPU operations.
pub const CANDLE_SPIN_LIMIT: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// After each element-wise operation candle's pool threads spin (25,000 `pause` instructions by
/// default) before they sleep. When every core runs the next matrix product, the spinning takes
/// a core's time from it: 11% of a GAML training step's CPU samples on 2 cores, and steps
/// 10-18% slower (GAML) and 10% slower (CNN) than with threads that sleep at once. Unless the
/// user has set [`CANDLE_SPIN_LIMIT`], this sets it to 0 (sleep at once).
///
/// Call it first thing in `main`, before any thread exists: the environment must not be written
/// while other threads may read it.
pub fn park_idle_candle_threads() {
    if std::env::var_os(CANDLE_SPIN_LIMIT).is_none() {
        std::env::set_var(CANDLE_SPIN_LIMIT, "0");
    }
}
