//! The classifier's own cost per packet, timed by the kernel without
//! `bpf_stats`: `BPF_PROG_TEST_RUN` runs the attached program on one
//! crafted frame a million times in a row and reports the mean time per
//! run, measured around whole batches (two clock reads per batch, not per
//! run). On this kind of virtual machine `bpf_stats`' own per-run clock
//! reads cost more than the program (see `empty_program_ns_per_run`), so
//! this is the figure the 50 ns target can be read against.
//!
//! `ns_per_lookup` does the same for the sk_lookup program with a lookup
//! context (a new TCP connection to a given local address and port).
//!
//! The frame is the datapath section's load packet (Ethernet, IPv4, UDP to
//! the watched target), so the run takes the counted path: parse, target
//! lookup, counter update.

use std::{io, os::fd::FromRawFd as _, os::fd::OwnedFd};

use anyhow::{bail, Context as _};

/// `BPF_PROG_TEST_RUN` and `BPF_PROG_GET_FD_BY_ID` (uapi `enum bpf_cmd`).
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;

/// Runs per measurement: long enough (tens of ms) that the batch clock
/// reads and the syscall vanish in the mean.
pub const REPEAT: u32 = 1_000_000;

/// The `test` member of uapi `union bpf_attr`, field for field.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// The `BPF_*_GET_FD_BY_ID` member of uapi `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed uapi attribute struct
    // of the size passed; the kernel reads and writes only within it.
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A file descriptor for the loaded program `id`.
fn program_fd(id: u64) -> anyhow::Result<OwnedFd> {
    let mut attr = GetFdAttr {
        id: u32::try_from(id).context("program id")?,
        ..GetFdAttr::default()
    };
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).context("BPF_PROG_GET_FD_BY_ID")?;
    // SAFETY: the kernel just returned this descriptor to us; nobody else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Ethernet + IPv4 + UDP frame from 127.0.0.1:40000 to 127.0.0.1:`port`
/// carrying `payload` bytes.
pub fn udp_frame(port: u16, payload: usize) -> Vec<u8> {
    let udp_len = 8 + payload;
    let ip_len = 20 + udp_len;
    let mut frame = Vec::with_capacity(14 + ip_len);
    frame.extend_from_slice(&[0; 12]); // destination and source MAC
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&u16::try_from(ip_len).unwrap_or(u16::MAX).to_be_bytes());
    ip[8] = 64; // TTL
    ip[9] = 17; // UDP
    ip[12..16].copy_from_slice(&[127, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[127, 0, 0, 1]);
    let checksum = !ones_complement_sum(&ip);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&40000u16.to_be_bytes());
    frame.extend_from_slice(&port.to_be_bytes());
    frame.extend_from_slice(&u16::try_from(udp_len).unwrap_or(u16::MAX).to_be_bytes());
    frame.extend_from_slice(&[0, 0]); // no UDP checksum
    frame.resize(frame.len() + payload, 0x5a);
    frame
}

/// The 16-bit one's complement sum of `bytes` (even length), as the IPv4
/// header checksum uses it.
fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let sum = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .fold(0u32, |sum, w| {
            let s = sum + w;
            (s & 0xffff) + (s >> 16)
        });
    sum as u16
}

/// Mean nanoseconds per run of program `id` on `frame`, over [`REPEAT`]
/// runs, as the kernel timed them.
pub fn ns_per_run(id: u64, frame: &[u8]) -> anyhow::Result<f64> {
    let fd = program_fd(id)?;
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: std::os::fd::AsRawFd::as_raw_fd(&fd) as u32,
        data_size_in: u32::try_from(frame.len())?,
        data_size_out: u32::try_from(out.len())?,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: REPEAT,
        ..TestRunAttr::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN")?;
    if attr.duration == 0 {
        bail!("the kernel reported no run time");
    }
    Ok(f64::from(attr.duration))
}

/// uapi `struct bpf_sk_lookup`, the context `BPF_PROG_TEST_RUN` hands an
/// sk_lookup program (addresses and `remote_port` in network order, the
/// rest in host order).
#[repr(C)]
#[derive(Default)]
struct SkLookupCtx {
    cookie: u64,
    family: u32,
    protocol: u32,
    remote_ip4: u32,
    remote_ip6: [u32; 4],
    remote_port: u16,
    _pad: u16,
    local_ip4: u32,
    local_ip6: [u32; 4],
    local_port: u32,
    ingress_ifindex: u32,
    /// The C struct's trailing padding (its size rounds up to the `u64`
    /// alignment of `cookie`), made a field so it is zeroed: the kernel
    /// refuses a context with any non-zero byte past `local_port`
    /// (EINVAL), and Rust leaves implicit padding undefined.
    _tail: u32,
}

/// Mean nanoseconds per run of sk_lookup program `id` for a new IPv4 TCP
/// connection from 127.0.0.1:40000 to `local`:`port`, over [`REPEAT`] runs.
pub fn ns_per_lookup(id: u64, local: [u8; 4], port: u16) -> anyhow::Result<f64> {
    let fd = program_fd(id)?;
    let mut ctx = SkLookupCtx {
        family: libc::AF_INET as u32,
        protocol: libc::IPPROTO_TCP as u32,
        remote_ip4: u32::from_ne_bytes([127, 0, 0, 1]),
        remote_port: 40000u16.to_be(),
        local_ip4: u32::from_ne_bytes(local),
        local_port: u32::from(port),
        ..SkLookupCtx::default()
    };
    let mut attr = TestRunAttr {
        prog_fd: std::os::fd::AsRawFd::as_raw_fd(&fd) as u32,
        repeat: REPEAT,
        ctx_size_in: u32::try_from(std::mem::size_of::<SkLookupCtx>())?,
        ctx_in: std::ptr::addr_of_mut!(ctx) as u64,
        ..TestRunAttr::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN (sk_lookup)")?;
    if attr.duration == 0 {
        bail!("the kernel reported no run time");
    }
    Ok(f64::from(attr.duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lookup_context_has_the_kernels_size() {
        // sizeof(struct bpf_sk_lookup) since Linux 5.19 (ingress_ifindex).
        assert_eq!(std::mem::size_of::<SkLookupCtx>(), 72);
    }

    #[test]
    fn frame_has_a_valid_ipv4_header() {
        let frame = udp_frame(8080, 64);
        assert_eq!(frame.len(), 14 + 20 + 8 + 64);
        // A correct header checksum sums to 0xffff.
        assert_eq!(ones_complement_sum(&frame[14..34]), 0xffff);
        assert_eq!(&frame[36..38], &8080u16.to_be_bytes());
    }
}
