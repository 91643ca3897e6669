//! States a tuner is in, overall and per network namespace.

/// Overall state of a tuner (the `tuners` query).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunerState {
    Inactive,
    Active,
    /// The administrator took over one of its sysctls in the initial namespace.
    Manual,
    Gone,
}

impl TunerState {
    pub fn as_str(self) -> &'static str {
        match self {
            TunerState::Inactive => "inactive",
            TunerState::Active => "active",
            TunerState::Manual => "manual",
            TunerState::Gone => "gone",
        }
    }
}

/// State of a tuner in one network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsState {
    Active,
    /// An administrator wrote one of the tuner's sysctls there: hands off.
    Manual,
    /// The namespace vanished or could not be written.
    Gone,
}
