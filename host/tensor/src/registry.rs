//! Parameter registry (SPEC.md §8): which parameters belong to which seed,
//! with the KD teacher's parameters immutable.
//!
//! Parameters are identified by their storage: a [`ParamId`] is the data
//! pointer, element count and dtype of the tensor. Shallow clones of a
//! parameter (what `VarStore::trainable_variables` and TorchScript hand out)
//! share it, so the same parameter reached through two handles is one entry.
//!
//! [`ParameterRegistry::validate_update`] answers *why* an update is refused
//! ([`UpdateRefusal`]), never a bare bool; the optimizer hub asks it before a
//! seed's parameters join an optimizer.

use std::collections::{BTreeMap, HashMap, HashSet};

use tch::{Kind, Tensor};

/// Most parameters one seed may register (a bound on kernel-supplied input;
/// real blueprints have tens).
pub const MAX_PARAMS_PER_SEED: usize = 4_096;

/// Identity of one parameter's storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParamId {
    addr: usize,
    numel: usize,
    kind: Kind,
}

impl ParamId {
    /// The id of `t`. Undefined or empty tensors have no identity.
    pub fn of(t: &Tensor) -> Result<ParamId, RegistryError> {
        if !t.defined() || t.numel() == 0 {
            return Err(RegistryError::UndefinedTensor);
        }
        // The address is only compared, never dereferenced.
        let addr = t.data_ptr() as usize;
        Ok(ParamId { addr, numel: t.numel(), kind: t.kind() })
    }
}

/// Why an update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateRefusal {
    /// The parameter belongs to the KD teacher, which is immutable.
    #[error("teacher_parameter")]
    TeacherParameter,
    /// No seed owns the parameter.
    #[error("unregistered")]
    Unregistered,
    /// Another seed owns it.
    #[error("owned_by_other_seed ({owner})")]
    OwnedByOtherSeed {
        /// The owning seed.
        owner: String,
    },
}

impl UpdateRefusal {
    /// The machine-readable reason code.
    pub fn reason(&self) -> &'static str {
        match self {
            UpdateRefusal::TeacherParameter => "teacher_parameter",
            UpdateRefusal::Unregistered => "unregistered",
            UpdateRefusal::OwnedByOtherSeed { .. } => "owned_by_other_seed",
        }
    }
}

/// Registry operations that can fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Seed ids must be non-empty.
    #[error("empty seed id")]
    EmptySeedId,
    /// The seed is already registered (deregister first).
    #[error("seed {0} already registered")]
    DuplicateSeed(String),
    /// The seed is not registered.
    #[error("seed {0} not registered")]
    UnknownSeed(String),
    /// A tensor without storage was offered as a parameter.
    #[error("undefined or empty tensor offered as a parameter")]
    UndefinedTensor,
    /// More parameters than [`MAX_PARAMS_PER_SEED`].
    #[error("{0} parameters exceed the per-seed cap")]
    TooManyParameters(usize),
    /// A seed tried to claim (or the teacher to include) a parameter someone else holds.
    #[error("parameter refused: {0}")]
    Refused(UpdateRefusal),
}

/// Seed → parameters, plus the immutable teacher set.
#[derive(Debug, Default)]
pub struct ParameterRegistry {
    owners: HashMap<ParamId, String>,
    seeds: BTreeMap<String, Vec<ParamId>>,
    teacher: HashSet<ParamId>,
}

impl ParameterRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `params` as `seed_id`'s. All or nothing: a parameter owned by
    /// another seed or by the teacher refuses the whole registration.
    pub fn register_seed(&mut self, seed_id: &str, params: &[Tensor]) -> Result<usize, RegistryError> {
        if seed_id.is_empty() {
            return Err(RegistryError::EmptySeedId);
        }
        if self.seeds.contains_key(seed_id) {
            return Err(RegistryError::DuplicateSeed(seed_id.to_owned()));
        }
        if params.len() > MAX_PARAMS_PER_SEED {
            return Err(RegistryError::TooManyParameters(params.len()));
        }
        let mut ids = Vec::with_capacity(params.len());
        for p in params {
            let id = ParamId::of(p)?;
            if self.teacher.contains(&id) {
                return Err(RegistryError::Refused(UpdateRefusal::TeacherParameter));
            }
            if let Some(owner) = self.owners.get(&id) {
                return Err(RegistryError::Refused(UpdateRefusal::OwnedByOtherSeed { owner: owner.clone() }));
            }
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        for id in &ids {
            self.owners.insert(*id, seed_id.to_owned());
        }
        let n = ids.len();
        self.seeds.insert(seed_id.to_owned(), ids);
        Ok(n)
    }

    /// Removes a seed and its parameters; returns how many were released.
    pub fn deregister_seed(&mut self, seed_id: &str) -> Result<usize, RegistryError> {
        let ids = self.seeds.remove(seed_id).ok_or_else(|| RegistryError::UnknownSeed(seed_id.to_owned()))?;
        for id in &ids {
            self.owners.remove(id);
        }
        Ok(ids.len())
    }

    /// Sets (or replaces) the teacher's parameters. Refused when a seed owns
    /// any of them: a teacher must not be trained by anyone.
    pub fn set_teacher(&mut self, params: &[Tensor]) -> Result<usize, RegistryError> {
        let mut ids = HashSet::with_capacity(params.len());
        for p in params {
            let id = ParamId::of(p)?;
            if let Some(owner) = self.owners.get(&id) {
                return Err(RegistryError::Refused(UpdateRefusal::OwnedByOtherSeed { owner: owner.clone() }));
            }
            ids.insert(id);
        }
        self.teacher = ids;
        Ok(self.teacher.len())
    }

    /// Drops the teacher; returns how many parameters it had.
    pub fn drop_teacher(&mut self) -> usize {
        std::mem::take(&mut self.teacher).len()
    }

    /// Forgets everything (emergency cleanup).
    pub fn reset(&mut self) {
        self.owners.clear();
        self.seeds.clear();
        self.teacher.clear();
    }

    /// Whether `seed_id` may update `param`, and if not, why.
    pub fn validate_update(&self, seed_id: &str, param: &Tensor) -> Result<(), UpdateRefusal> {
        let Ok(id) = ParamId::of(param) else {
            return Err(UpdateRefusal::Unregistered);
        };
        if self.teacher.contains(&id) {
            return Err(UpdateRefusal::TeacherParameter);
        }
        match self.owners.get(&id) {
            None => Err(UpdateRefusal::Unregistered),
            Some(owner) if owner != seed_id => Err(UpdateRefusal::OwnedByOtherSeed { owner: owner.clone() }),
            Some(_) => Ok(()),
        }
    }

    /// The seed owning `param`, if any.
    pub fn owner_of(&self, param: &Tensor) -> Option<&str> {
        ParamId::of(param).ok().and_then(|id| self.owners.get(&id)).map(String::as_str)
    }

    /// Parameter ids of a seed.
    pub fn seed_params(&self, seed_id: &str) -> Option<&[ParamId]> {
        self.seeds.get(seed_id).map(Vec::as_slice)
    }

    /// Registered seeds.
    pub fn seeds(&self) -> impl Iterator<Item = &str> {
        self.seeds.keys().map(String::as_str)
    }

    /// Number of teacher parameters.
    pub fn teacher_len(&self) -> usize {
        self.teacher.len()
    }

    /// Whether nothing is registered (gate G5: slot clean).
    pub fn is_empty(&self) -> bool {
        self.seeds.is_empty() && self.teacher.is_empty()
    }
}
