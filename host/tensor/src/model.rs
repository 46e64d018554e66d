//! The host side of grafting: a registry of named sites, in forward order,
//! each holding zero or more seed slots.
//!
//! A trainer's host model declares its sites once (`["block1", "block2"]`)
//! and, in its forward pass, hands the output of each site to
//! [`SeededModel::apply`]. Sites must be applied in declared order within a
//! pass (checked, so a refactored model that reorders blocks fails loudly
//! instead of blending the wrong features). Several slots at one site run in
//! the order they were added, each taking the previous one's output as its
//! host output.

use std::collections::BTreeMap;

use tch::Tensor;

use crate::blend::stats::BlendStats;
use crate::error::{Result, TensorError};
use crate::slot::{ForwardCtx, SeedSlot};

/// Most sites one model may declare (a bound on caller input).
pub const MAX_SITES: usize = 1_024;

#[derive(Debug)]
struct Site {
    name: String,
    slots: Vec<SeedSlot>,
}

/// Named sites in forward order, with their slots.
#[derive(Debug)]
pub struct SeededModel {
    sites: Vec<Site>,
    /// Index of the last site applied in the current pass.
    cursor: Option<usize>,
}

impl SeededModel {
    /// Declares the model's sites, in the order its forward pass reaches them.
    pub fn new<I, S>(sites: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut out: Vec<Site> = Vec::new();
        for name in sites {
            let name = name.into();
            if name.is_empty() {
                return Err(TensorError::InvalidConfig { name: "site", rule: "site names must be non-empty".into() });
            }
            if out.iter().any(|s| s.name == name) {
                return Err(TensorError::Duplicate { what: "site", name });
            }
            if out.len() == MAX_SITES {
                return Err(TensorError::InvalidConfig { name: "sites", rule: format!("at most {MAX_SITES} sites") });
            }
            out.push(Site { name, slots: Vec::new() });
        }
        Ok(SeededModel { sites: out, cursor: None })
    }

    /// Site names in forward order.
    pub fn sites(&self) -> impl Iterator<Item = &str> {
        self.sites.iter().map(|s| s.name.as_str())
    }

    /// Whether `site` is declared (gate G3's "mesh covers the seed's layer").
    pub fn has_site(&self, site: &str) -> bool {
        self.sites.iter().any(|s| s.name == site)
    }

    /// Adds a slot at its site. Seed ids are unique across the model.
    pub fn add_slot(&mut self, slot: SeedSlot) -> Result<()> {
        if self.slot(slot.seed_id()).is_some() {
            return Err(TensorError::Duplicate { what: "slot", name: slot.seed_id().to_owned() });
        }
        let site = self
            .sites
            .iter_mut()
            .find(|s| s.name == slot.site())
            .ok_or_else(|| TensorError::UnknownSite(slot.site().to_owned()))?;
        site.slots.push(slot);
        Ok(())
    }

    /// Removes and returns a slot.
    pub fn remove_slot(&mut self, seed_id: &str) -> Option<SeedSlot> {
        for site in &mut self.sites {
            if let Some(i) = site.slots.iter().position(|s| s.seed_id() == seed_id) {
                return Some(site.slots.remove(i));
            }
        }
        None
    }

    /// A slot by seed id.
    pub fn slot(&self, seed_id: &str) -> Option<&SeedSlot> {
        self.sites.iter().flat_map(|s| &s.slots).find(|s| s.seed_id() == seed_id)
    }

    /// A slot by seed id, mutably (stage changes, kernel attach, pause).
    pub fn slot_mut(&mut self, seed_id: &str) -> Option<&mut SeedSlot> {
        self.sites.iter_mut().flat_map(|s| &mut s.slots).find(|s| s.seed_id() == seed_id)
    }

    /// Starts a forward pass (resets the site-order check).
    pub fn begin_forward(&mut self) {
        self.cursor = None;
    }

    /// Runs every slot at `site` on the host's output there, in order, and
    /// returns what the host model should continue with.
    pub fn apply(&mut self, site: &str, host_out: &Tensor, ctx: &ForwardCtx<'_>) -> Result<Tensor> {
        let index =
            self.sites.iter().position(|s| s.name == site).ok_or_else(|| TensorError::UnknownSite(site.to_owned()))?;
        if let Some(prev) = self.cursor
            && index <= prev
        {
            return Err(TensorError::SiteOrder { site: site.to_owned(), previous: self.sites[prev].name.clone() });
        }
        self.cursor = Some(index);
        let mut current = host_out.shallow_clone();
        for slot in &mut self.sites[index].slots {
            current = slot.forward(&current, ctx)?.out;
        }
        Ok(current)
    }

    /// Ends a training step: returns each slot's blend stats for the step,
    /// keyed by seed id (α itself only changes by directive).
    pub fn end_step(&mut self) -> BTreeMap<String, BlendStats> {
        let mut stats = BTreeMap::new();
        for slot in self.sites.iter_mut().flat_map(|s| &mut s.slots) {
            if let Some(s) = slot.end_step() {
                stats.insert(slot.seed_id().to_owned(), s);
            }
        }
        self.cursor = None;
        stats
    }
}
