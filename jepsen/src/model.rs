//! Sequential specifications: what a single register may do, one operation at a time.
//!
//! A [`Model`] is a pure function `step(state, op) -> Option<state>`: `None` means the
//! operation cannot happen in that state (a read of the wrong value, a CAS whose expected
//! value is not there). Models never see `fail` operations (they did not happen) nor reads
//! that did not complete `ok` (they constrain nothing).
//!
//! Register values are `i64` or nil; nil is the initial, unset state, so a read of nil
//! observes "never written". Besides the known states, [`RegisterState::Unknown`] stands
//! for "some value we have not seen": the first read or CAS that meets it binds it. That
//! lets the failure analysis check a window cut from the middle of a history without
//! guessing what the register held when the window starts (an existential initial state).
//!
//! The multi-key map is not a model of its own: keys are independent, so the checker
//! splits a multi-key history per key and checks each with the register model
//! (P-compositionality).

use std::fmt;
use std::hash::Hash;
use std::str::FromStr;

use serde::Serialize;

use crate::history::{Function, OpKind};

/// A sequential specification the search linearises against.
pub trait Model: Sync {
    /// A model state; hashed and compared for the search's memoisation.
    type State: Clone + Eq + Hash + fmt::Debug + Send;

    /// The state every history starts from.
    fn init(&self) -> Self::State;

    /// A state standing for "any value": used to check a window cut from a history.
    fn unknown(&self) -> Self::State;

    /// The state after `op`, or `None` if `op` cannot happen in `state`.
    fn step(&self, state: &Self::State, op: &OpKind) -> Option<Self::State>;

    /// Whether `op` never changes a known state it is legal in (it may still bind the
    /// unknown state). The search uses it to prune: such an operation that is legal now and
    /// leaves the state as it is is linearised now, with no alternative to explore.
    fn is_read_only(&self, op: &OpKind) -> bool;
}

/// The state of one register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterState {
    /// Some value not yet observed (only at the start of a window).
    Unknown,
    /// The value held; `None` is the unset register.
    Known(Option<i64>),
}

/// A read/write register. CAS is not part of it: histories with CAS need [`CasRegister`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Register;

/// A read/write/compare-and-set register.
#[derive(Debug, Clone, Copy, Default)]
pub struct CasRegister;

/// The state after a read or write, which both register models share.
fn read_write(state: &RegisterState, op: &OpKind) -> Option<RegisterState> {
    match (*state, *op) {
        (RegisterState::Unknown, OpKind::Read { value }) => Some(RegisterState::Known(value)),
        (RegisterState::Known(held), OpKind::Read { value }) => (held == value).then_some(*state),
        (_, OpKind::Write { value }) => Some(RegisterState::Known(value)),
        (_, OpKind::Cas { .. }) => None,
    }
}

impl Model for Register {
    type State = RegisterState;

    fn init(&self) -> RegisterState {
        RegisterState::Known(None)
    }

    fn unknown(&self) -> RegisterState {
        RegisterState::Unknown
    }

    fn step(&self, state: &RegisterState, op: &OpKind) -> Option<RegisterState> {
        read_write(state, op)
    }

    fn is_read_only(&self, op: &OpKind) -> bool {
        matches!(op, OpKind::Read { .. })
    }
}

impl Model for CasRegister {
    type State = RegisterState;

    fn init(&self) -> RegisterState {
        RegisterState::Known(None)
    }

    fn unknown(&self) -> RegisterState {
        RegisterState::Unknown
    }

    fn step(&self, state: &RegisterState, op: &OpKind) -> Option<RegisterState> {
        match (*state, *op) {
            (RegisterState::Unknown, OpKind::Cas { new, .. }) => Some(RegisterState::Known(new)),
            (RegisterState::Known(held), OpKind::Cas { expected, new }) => {
                (held == expected).then_some(RegisterState::Known(new))
            }
            _ => read_write(state, op),
        }
    }

    fn is_read_only(&self, op: &OpKind) -> bool {
        matches!(op, OpKind::Read { .. })
    }
}

/// The models the checker offers, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// [`Register`]: read and write.
    Register,
    /// [`CasRegister`]: read, write and compare-and-set.
    #[default]
    CasRegister,
}

impl ModelKind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Register => "register",
            ModelKind::CasRegister => "cas-register",
        }
    }

    /// Whether the model defines `f`.
    pub fn supports(self, f: Function) -> bool {
        match self {
            ModelKind::Register => f != Function::Cas,
            ModelKind::CasRegister => true,
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown model name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model {0:?}: expected register or cas-register")]
pub struct UnknownModel(pub String);

impl FromStr for ModelKind {
    type Err = UnknownModel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "register" => Ok(ModelKind::Register),
            "cas-register" => Ok(ModelKind::CasRegister),
            other => Err(UnknownModel(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNSET: RegisterState = RegisterState::Known(None);

    fn known(v: i64) -> RegisterState {
        RegisterState::Known(Some(v))
    }

    #[test]
    fn read_of_nil_observes_the_unset_register() {
        let m = CasRegister;
        assert_eq!(m.step(&m.init(), &OpKind::Read { value: None }), Some(UNSET));
        assert_eq!(m.step(&m.init(), &OpKind::Read { value: Some(1) }), None);
    }

    #[test]
    fn write_then_read_returns_the_written_value() {
        let m = Register;
        let s = m.step(&m.init(), &OpKind::Write { value: Some(3) });
        assert_eq!(s, Some(known(3)));
        assert_eq!(m.step(&known(3), &OpKind::Read { value: Some(3) }), Some(known(3)));
        assert_eq!(m.step(&known(3), &OpKind::Read { value: Some(4) }), None);
    }

    #[test]
    fn cas_succeeds_only_from_the_expected_value() {
        let m = CasRegister;
        let cas = OpKind::Cas { expected: Some(1), new: Some(2) };
        assert_eq!(m.step(&known(1), &cas), Some(known(2)));
        assert_eq!(m.step(&known(3), &cas), None);
        assert_eq!(m.step(&UNSET, &cas), None);
    }

    #[test]
    fn register_model_never_allows_cas() {
        let cas = OpKind::Cas { expected: Some(1), new: Some(2) };
        assert_eq!(Register.step(&known(1), &cas), None);
        assert!(!ModelKind::Register.supports(Function::Cas));
    }

    #[test]
    fn unknown_state_is_bound_by_the_first_read_or_cas() {
        let m = CasRegister;
        let read = OpKind::Read { value: Some(7) };
        assert_eq!(m.step(&m.unknown(), &read), Some(known(7)));
        let cas = OpKind::Cas { expected: Some(7), new: Some(8) };
        assert_eq!(m.step(&m.unknown(), &cas), Some(known(8)));
    }

    #[test]
    fn model_names_round_trip() {
        for kind in [ModelKind::Register, ModelKind::CasRegister] {
            assert_eq!(kind.name().parse::<ModelKind>(), Ok(kind));
        }
        assert!("queue".parse::<ModelKind>().is_err());
    }
}
