//! A one-byte-per-port array the kernel programs read before a hash
//! lookup (`TARGET_PORTS`, `STEERED_PORTS`), with user-space reference
//! counts so a port's byte is cleared only when its last user goes.

use std::collections::HashMap;

use aya::maps::{Array, MapData};

use super::BpfError;

/// The array and how many entries use each port.
pub(super) struct PortFilter {
    /// The kernel array, indexed by port.
    array: Array<MapData, u8>,
    /// Its map name, for errors.
    name: &'static str,
    /// Users per port; ports without users are absent.
    users: HashMap<u16, u32>,
}

impl PortFilter {
    /// Wraps the kernel array `name` (all zero when loaded).
    pub(super) fn new(array: Array<MapData, u8>, name: &'static str) -> Self {
        Self {
            array,
            name,
            users: HashMap::new(),
        }
    }

    /// One more entry uses `port`.
    pub(super) fn retain(&mut self, port: u16) -> Result<(), BpfError> {
        let users = self.users.get(&port).copied().unwrap_or(0);
        if users == 0 {
            self.set(port, 1)?;
        }
        self.users.insert(port, users + 1);
        Ok(())
    }

    /// One entry fewer uses `port`; the last one clears its byte.
    pub(super) fn release(&mut self, port: u16) -> Result<(), BpfError> {
        let users = self.users.remove(&port).unwrap_or(0);
        if users > 1 {
            self.users.insert(port, users - 1);
            return Ok(());
        }
        self.set(port, 0)
    }

    fn set(&mut self, port: u16, value: u8) -> Result<(), BpfError> {
        self.array
            .set(u32::from(port), value, 0)
            .map_err(|source| BpfError::Map {
                map: self.name,
                source,
            })
    }
}
