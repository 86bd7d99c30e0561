//! Coder's enum labels that the store writes (lifecycle states, app healths, log levels, agent subsystems, resource
//! monitor states), as typed
//! values: handlers convert from the protobuf once, and nothing else can reach a column.

use crate::StoreError;

macro_rules! coder_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident = $label:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $(#[doc = concat!("`", $label, "`")] $variant),*
        }

        impl $name {
            /// Every value, in Coder's (and sorting) order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The label as Coder's schema stores it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label),*
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = StoreError;

            fn from_str(label: &str) -> Result<Self, StoreError> {
                match label {
                    $($label => Ok($name::$variant),)*
                    _ => Err(StoreError::Invalid(format!(concat!("unknown ", $what, " {:?}"), label))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

coder_enum!(
    /// `workspace_agent_lifecycle_state`.
    LifecycleState, "lifecycle state" {
        Created = "created",
        Starting = "starting",
        StartTimeout = "start_timeout",
        StartError = "start_error",
        Ready = "ready",
        ShuttingDown = "shutting_down",
        ShutdownTimeout = "shutdown_timeout",
        ShutdownError = "shutdown_error",
        Off = "off",
    }
);

coder_enum!(
    /// `workspace_app_health`.
    AppHealth, "app health" {
        Disabled = "disabled",
        Initializing = "initializing",
        Healthy = "healthy",
        Unhealthy = "unhealthy",
    }
);

coder_enum!(
    /// `log_level`.
    LogLevel, "log level" {
        Trace = "trace",
        Debug = "debug",
        Info = "info",
        Warn = "warn",
        Error = "error",
    }
);

coder_enum!(
    /// `workspace_agent_subsystem` (Coder stores them sorted; the variants sort the same way).
    Subsystem, "agent subsystem" {
        Envbox = "envbox",
        Envbuilder = "envbuilder",
        Exectrace = "exectrace",
    }
);

coder_enum!(
    /// `workspace_agent_monitor_state`: a resource monitor's verdict. Typed because its writes are batched: one label
    /// the database refused would fail every agent's monitors in that flush.
    MonitorState, "monitor state" {
        Ok = "OK",
        Nok = "NOK",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_unknown_ones_are_invalid() {
        for state in LifecycleState::ALL {
            assert_eq!(state.as_str().parse::<LifecycleState>().ok(), Some(*state));
        }
        for level in LogLevel::ALL {
            assert_eq!(level.to_string().parse::<LogLevel>().ok(), Some(*level));
        }
        assert!(
            matches!("bogus".parse::<AppHealth>(), Err(StoreError::Invalid(text)) if text == r#"unknown app health "bogus""#)
        );
        let mut sorted = Subsystem::ALL.to_vec();
        sorted.sort_by_key(|s| s.as_str());
        assert_eq!(sorted, Subsystem::ALL, "the variants sort as their labels do");
    }
}
