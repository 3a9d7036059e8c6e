//! Every map of the object, in one place. Names, key and value types are
//! documented in `autostop_common::names`.

use autostop_common::{
    Activity, DatapathStats, SteerKey, TargetKey, TargetSlotV4, LISTENER_SLOTS,
    MAX_IGNORED_SOURCES, MAX_SERVICES, MAX_STEERED_PORTS, MAX_TARGETS, PORT_SLOTS, STEER_ANY,
    STEER_EXACT, V4_SLOTS, WAKE_RING_BYTES,
};
use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, SockMap},
};

#[map(name = "SERVICE_TARGETS")]
pub static SERVICE_TARGETS: HashMap<TargetKey, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);

#[map(name = "TARGET_PORTS")]
pub static TARGET_PORTS: Array<u8> = Array::with_max_entries(PORT_SLOTS, 0);

/// Whether some target has destination port `port`: an array read, where
/// the target lookup hashes a 20-byte key.
#[inline(always)]
pub fn is_target_port(port: u16) -> bool {
    TARGET_PORTS
        .get(u32::from(port))
        .is_some_and(|used| *used != 0)
}

#[map(name = "TARGETS_V4")]
pub static TARGETS_V4: Array<TargetSlotV4> = Array::with_max_entries(V4_SLOTS, 0);

/// The service IPv4 destination `addr:port` over `protocol` belongs to:
/// one array read for a target alone in its slot, the hash lookup only for
/// a slot several targets share.
#[inline(always)]
pub fn service_of_v4(addr: [u8; 4], port: u16, protocol: u8) -> Option<u32> {
    let slot = TARGETS_V4.get(TargetSlotV4::index(addr, port, protocol))?;
    if slot.flags == TargetSlotV4::USED {
        let same =
            slot.addr == u32::from_ne_bytes(addr) && slot.port == port && slot.protocol == protocol;
        same.then_some(slot.service)
    } else if slot.flags == TargetSlotV4::SHARED {
        service_of(&TargetKey::ipv4(addr, port, protocol))
    } else {
        None
    }
}

/// The service `key` belongs to, from the hash map of every target.
#[inline(always)]
pub fn service_of(key: &TargetKey) -> Option<u32> {
    // SAFETY: the map is preallocated and values are plain u32 indexes; a
    // racing update can at worst give us the neighbouring value's index,
    // which is still a valid array index.
    unsafe { SERVICE_TARGETS.get(key) }.copied()
}

#[map(name = "ACTIVITY")]
pub static ACTIVITY: PerCpuArray<Activity> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

#[map(name = "DATAPATH_STATS")]
pub static DATAPATH_STATS: PerCpuArray<DatapathStats> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "STEERED")]
pub static STEERED: HashMap<SteerKey, u32> = HashMap::with_max_entries(MAX_STEERED_PORTS, 0);

#[map(name = "STEERED_ANY")]
pub static STEERED_ANY: HashMap<u16, u32> = HashMap::with_max_entries(MAX_STEERED_PORTS, 0);

#[map(name = "STEERED_PORTS")]
pub static STEERED_PORTS: Array<u8> = Array::with_max_entries(PORT_SLOTS, 0);

/// The service a new connection to local address `key.addr` on `key.port`
/// is steered for: an array read for a port nobody steers, else the
/// address-specific entry, else the every-address one (each map searched
/// only when the port's flags say it may hold the port).
#[inline(always)]
pub fn steered_service(key: &SteerKey) -> Option<u32> {
    let flags = STEERED_PORTS
        .get(u32::from(key.port))
        .map_or(0, |flags| *flags);
    if flags & STEER_EXACT != 0 {
        // SAFETY: values are plain u32 service indexes; a racing update can
        // at worst give a stale index, which only names the wrong service.
        if let Some(service) = unsafe { STEERED.get(key) } {
            return Some(*service);
        }
    }
    if flags & STEER_ANY != 0 {
        // SAFETY: as above.
        return unsafe { STEERED_ANY.get(&key.port) }.copied();
    }
    None
}

#[map(name = "LISTENERS")]
pub static LISTENERS: SockMap = SockMap::with_max_entries(LISTENER_SLOTS, 0);

#[map(name = "WAKE_EVENTS")]
pub static WAKE_EVENTS: RingBuf = RingBuf::with_byte_size(WAKE_RING_BYTES, 0);

#[map(name = "WAKE_LAST_SENT")]
pub static WAKE_LAST_SENT: LruHashMap<u16, u64> =
    LruHashMap::with_max_entries(MAX_STEERED_PORTS, 0);

#[map(name = "WAKE_BUCKETS")]
pub static WAKE_BUCKETS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(MAX_STEERED_PORTS, 0);

#[map(name = "IGNORED_SOURCES")]
pub static IGNORED_SOURCES: LpmTrie<[u8; 16], u8> =
    LpmTrie::with_max_entries(MAX_IGNORED_SOURCES, 0);

#[map(name = "IGNORED_SOURCE_COUNT")]
pub static IGNORED_SOURCE_COUNT: Array<u32> = Array::with_max_entries(1, 0);

/// Whether `addr` (16 bytes, IPv4 v4-mapped) falls in an ignored CIDR. The
/// trie is only searched when user space put something in it.
#[inline(always)]
pub fn is_ignored(addr: [u8; 16]) -> bool {
    let in_use = IGNORED_SOURCE_COUNT.get(0).is_some_and(|count| *count != 0);
    in_use && IGNORED_SOURCES.get(Key::new(128, addr)).is_some()
}

/// Adds to this CPU's health counters.
#[inline(always)]
pub fn bump(update: impl FnOnce(&mut DatapathStats)) {
    if let Some(stats) = DATAPATH_STATS.get_ptr_mut(0) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array; no other
        // program instance runs on this CPU while we hold it.
        update(unsafe { &mut *stats });
    }
}
