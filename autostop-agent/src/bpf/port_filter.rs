//! A one-byte-per-port array of flags the kernel programs read before a
//! hash lookup (`TARGET_PORTS`, `STEERED_PORTS`), with user-space reference
//! counts per flag, so a flag is cleared only when its last user goes.

use std::collections::HashMap;

use aya::maps::{Array, MapData};

use super::BpfError;

/// The array and how many entries use each (port, flag).
pub(super) struct PortFilter {
    /// The kernel array, indexed by port.
    array: Array<MapData, u8>,
    /// Its map name, for errors.
    name: &'static str,
    /// Users per (port, flag bit); pairs without users are absent.
    users: HashMap<(u16, u8), u32>,
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

    /// One more entry uses `port` under `flag` (one bit).
    pub(super) fn retain(&mut self, port: u16, flag: u8) -> Result<(), BpfError> {
        let users = self.users.get(&(port, flag)).copied().unwrap_or(0);
        self.users.insert((port, flag), users + 1);
        if users == 0 {
            self.write(port)?;
        }
        Ok(())
    }

    /// One entry fewer uses `port` under `flag`; the last one clears the
    /// flag.
    pub(super) fn release(&mut self, port: u16, flag: u8) -> Result<(), BpfError> {
        let users = self.users.remove(&(port, flag)).unwrap_or(0);
        if users > 1 {
            self.users.insert((port, flag), users - 1);
            return Ok(());
        }
        self.write(port)
    }

    /// Writes `port`'s byte: every flag that has users.
    fn write(&mut self, port: u16) -> Result<(), BpfError> {
        let value = self
            .users
            .keys()
            .filter(|(p, _)| *p == port)
            .fold(0u8, |flags, (_, flag)| flags | flag);
        self.array
            .set(u32::from(port), value, 0)
            .map_err(|source| BpfError::Map {
                map: self.name,
                source,
            })
    }
}
