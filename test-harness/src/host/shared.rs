//! What Envoy shares between the VMs of one proxy (its worker threads): shared data (per VM id, with CAS),
//! shared queues, and metrics. Several [`Harness`](super::Harness)es built with the same [`SharedData`]
//! behave like the workers of one Envoy.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::abi::Status;

/// The kind of a metric (`proxy_define_metric`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down, or is set.
    Gauge,
    /// Records samples.
    Histogram,
}

/// A defined metric and its current value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metric {
    /// The name the filter defined.
    pub name: String,
    /// Its kind.
    pub kind: MetricKind,
    /// Counter or gauge value (0 for a histogram).
    pub value: i64,
    /// Histogram samples, in order.
    pub samples: Vec<u64>,
}

#[derive(Debug)]
pub(crate) struct Queue {
    pub vm_id: String,
    pub name: String,
    /// The harness and context that registered the queue: they get `proxy_on_queue_ready`.
    pub owner: (u64, u32),
    pub items: VecDeque<Vec<u8>>,
    pub ready: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Store {
    /// (vm_id, key) → (value, cas)
    data: HashMap<(String, String), (Vec<u8>, u32)>,
    last_cas: u32,
    /// Queue ids start at 1.
    pub queues: Vec<Queue>,
    pub metrics: Vec<Metric>,
    /// How many VMs were started on this store (distinguishes their default random seeds).
    pub vms: u64,
}

/// Shared data, queues and metrics; cheap to clone (it is an `Arc<Mutex<…>>`). Pass the same value to several
/// harnesses (`Harness::builder().shared(shared.clone())`) to make them workers of one proxy.
#[derive(Clone, Debug, Default)]
pub struct SharedData(Arc<Mutex<Store>>);

impl SharedData {
    /// An empty store.
    pub fn new() -> Self {
        SharedData::default()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves the store consistent enough for tests to report it.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value and CAS of `key` in VM `vm_id` (the harness default VM id is `mlgate`).
    pub fn get(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        self.lock().get(vm_id, key)
    }

    /// Sets `key` as the filter would with `proxy_set_shared_data`: `cas` 0 is unconditional; any other
    /// value must equal the current CAS of an existing key, else [`Status::CasMismatch`].
    pub fn set(&self, vm_id: &str, key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
        self.lock().set(vm_id, key, value, cas)
    }

    /// Every key of a VM id, sorted.
    pub fn keys(&self, vm_id: &str) -> Vec<String> {
        let store = self.lock();
        let mut keys: Vec<String> = store
            .data
            .keys()
            .filter(|(vm, _)| vm == vm_id)
            .map(|(_, k)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    /// The metric `name`, if defined by any VM sharing this store.
    pub fn metric(&self, name: &str) -> Option<Metric> {
        self.lock().metrics.iter().find(|m| m.name == name).cloned()
    }

    /// Every defined metric, by name.
    pub fn metrics(&self) -> BTreeMap<String, Metric> {
        self.lock()
            .metrics
            .iter()
            .map(|m| (m.name.clone(), m.clone()))
            .collect()
    }

    /// The items waiting in queue `name` of VM `vm_id`.
    pub fn queue_items(&self, vm_id: &str, name: &str) -> Option<Vec<Vec<u8>>> {
        let store = self.lock();
        store
            .queues
            .iter()
            .find(|q| q.vm_id == vm_id && q.name == name)
            .map(|q| q.items.iter().cloned().collect())
    }
}

impl Store {
    pub fn get(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        self.data
            .get(&(vm_id.to_string(), key.to_string()))
            .cloned()
    }

    pub fn set(&mut self, vm_id: &str, key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
        let k = (vm_id.to_string(), key.to_string());
        if let Some((_, current)) = self.data.get(&k) {
            if cas != 0 && cas != *current {
                return Err(Status::CasMismatch);
            }
        }
        // Envoy's nextCas(): increments, never 0.
        self.last_cas = self.last_cas.wrapping_add(1).max(1);
        self.data.insert(k, (value.to_vec(), self.last_cas));
        Ok(())
    }

    pub fn register_queue(&mut self, vm_id: &str, name: &str, owner: (u64, u32)) -> u32 {
        if let Some(i) = self
            .queues
            .iter()
            .position(|q| q.vm_id == vm_id && q.name == name)
        {
            if let Some(q) = self.queues.get_mut(i) {
                q.owner = owner;
            }
            return i as u32 + 1;
        }
        self.queues.push(Queue {
            vm_id: vm_id.into(),
            name: name.into(),
            owner,
            items: VecDeque::new(),
            ready: false,
        });
        self.queues.len() as u32
    }

    pub fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        self.queues
            .iter()
            .position(|q| q.vm_id == vm_id && q.name == name)
            .map(|i| i as u32 + 1)
    }

    pub fn queue_mut(&mut self, id: u32) -> Option<&mut Queue> {
        self.queues.get_mut((id as usize).checked_sub(1)?)
    }

    pub fn define_metric(&mut self, kind: MetricKind, name: &str) -> u32 {
        if let Some(i) = self.metrics.iter().position(|m| m.name == name) {
            return i as u32 + 1;
        }
        self.metrics.push(Metric {
            name: name.into(),
            kind,
            value: 0,
            samples: Vec::new(),
        });
        self.metrics.len() as u32
    }

    pub fn metric_mut(&mut self, id: u32) -> Option<&mut Metric> {
        self.metrics.get_mut((id as usize).checked_sub(1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_zero_is_unconditional_and_a_stale_cas_is_refused() {
        let s = SharedData::new();
        s.set("vm", "k", b"1", 0).unwrap();
        let (_, cas1) = s.get("vm", "k").unwrap();
        s.set("vm", "k", b"2", cas1).unwrap();
        let (v, cas2) = s.get("vm", "k").unwrap();
        assert_eq!((v.as_slice(), cas2 != cas1), (&b"2"[..], true));
        assert_eq!(s.set("vm", "k", b"3", cas1), Err(Status::CasMismatch));
        s.set("vm", "k", b"4", 0).unwrap();
        assert_eq!(s.get("vm", "k").unwrap().0, b"4");
    }

    #[test]
    fn data_is_scoped_by_vm_id() {
        let s = SharedData::new();
        s.set("a", "k", b"1", 0).unwrap();
        assert!(s.get("b", "k").is_none());
        assert_eq!(s.keys("a"), ["k"]);
    }
}
