//! Which bf16 kernels this process runs: detected once (CPUID, XCR0 and the kernel's tile
//! permission for AMX), lowered by `GRPO_BF16_TIER` or `force_tier`, never raised above what
//! the CPU has.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// The kernels that run a bf16 product, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// The f32 kernels on bf16-rounded inputs (any CPU).
    F32,
    /// `vdpbf16ps` (AVX512-BF16: Zen 4, Cooper Lake and later).
    Avx512Bf16,
    /// `tdpbf16ps` tiles (AMX: Sapphire Rapids and later).
    Amx,
}

impl Tier {
    /// The name `grpo bench gemm --json` prints and `GRPO_BF16_TIER` takes.
    pub fn name(self) -> &'static str {
        match self {
            Tier::F32 => "f32",
            Tier::Avx512Bf16 => "avx512-bf16",
            Tier::Amx => "amx",
        }
    }

    /// A tier by name (`amx`, `avx512-bf16`, `f32`).
    pub fn parse(s: &str) -> Result<Tier, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "amx" => Ok(Tier::Amx),
            "avx512-bf16" | "avx512bf16" | "avx512_bf16" => Ok(Tier::Avx512Bf16),
            "f32" => Ok(Tier::F32),
            other => Err(format!(
                "unknown bf16 tier '{other}': expected amx, avx512-bf16 or f32"
            )),
        }
    }

    fn from_u8(v: u8) -> Tier {
        match v {
            2 => Tier::Amx,
            1 => Tier::Avx512Bf16,
            _ => Tier::F32,
        }
    }
}

/// The environment variable that lowers the tier.
pub const ENV: &str = "GRPO_BF16_TIER";

/// Whether the CPU (and the OS) can run the AVX512-BF16 kernels.
pub fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether AMX-BF16 tiles may be used: CPUID says AMX-TILE and AMX-BF16, XCR0 has the tile
/// state enabled, and Linux granted this process the tile data (`arch_prctl`). A VM can show
/// the CPUID bits and still refuse the last two.
pub fn amx_usable() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        use std::arch::x86_64::{__cpuid, __cpuid_count};
        // SAFETY: CPUID exists on every x86_64 CPU; leaf 7 is only read when leaf 0 says it
        // exists, and XGETBV only when CPUID.1:ECX.OSXSAVE says the OS enabled it.
        unsafe {
            if __cpuid(0).eax < 7 {
                return false;
            }
            let edx = __cpuid_count(7, 0).edx;
            let (amx_bf16, amx_tile) = ((edx >> 22) & 1 == 1, (edx >> 24) & 1 == 1);
            if !(amx_bf16 && amx_tile) || (__cpuid(1).ecx >> 27) & 1 == 0 {
                return false;
            }
            // XCR0 bit 17: XTILECFG, bit 18: XTILEDATA.
            if xcr0() & (3 << 17) != 3 << 17 {
                return false;
            }
        }
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a plain syscall with integer arguments; it only changes this process's
        // permission to use the tile state.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        };
        rc == 0
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    false
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
unsafe fn xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    (hi as u64) << 32 | lo as u64
}

/// The best tier this machine runs correctly, detected once. AMX must also pass a small
/// self-check product against the reference the first time; on a mismatch it is logged and
/// the AVX512-BF16 tier is used instead.
pub fn hardware_tier() -> Tier {
    static HW: OnceLock<Tier> = OnceLock::new();
    *HW.get_or_init(|| {
        if !has_avx512_bf16() {
            return Tier::F32;
        }
        if amx_usable() {
            #[cfg(target_arch = "x86_64")]
            match super::amx::self_check() {
                Ok(()) => return Tier::Amx,
                Err(e) => tracing::warn!("AMX bf16 self-check failed ({e}); using avx512-bf16"),
            }
        }
        Tier::Avx512Bf16
    })
}

/// `requested` lowered to what `hw` has.
pub fn lower(hw: Tier, requested: Tier) -> Tier {
    hw.min(requested)
}

/// The tier `GRPO_BF16_TIER` asks for on this machine (the hardware's when unset), or a
/// message naming the variable and the accepted values.
pub fn tier_from_env() -> Result<Tier, String> {
    tier_for(hardware_tier(), std::env::var(ENV).ok().as_deref())
}

/// The tier for hardware `hw` and a `GRPO_BF16_TIER` value (unset or empty: `hw`).
pub fn tier_for(hw: Tier, var: Option<&str>) -> Result<Tier, String> {
    match var {
        Some(v) if !v.trim().is_empty() => Tier::parse(v)
            .map(|t| lower(hw, t))
            .map_err(|e| format!("{ENV}={v}: {e}")),
        _ => Ok(hw),
    }
}

const UNSET: u8 = u8::MAX;
static ACTIVE: AtomicU8 = AtomicU8::new(UNSET);

/// The tier bf16 products use in this process: the hardware's, lowered by `GRPO_BF16_TIER`
/// or `force_tier`. Call `tier_from_env` first (the CLI does, at start-up) to turn a bad
/// variable into an error; here a bad value panics with the same message.
pub fn tier() -> Tier {
    let v = ACTIVE.load(Ordering::Relaxed);
    if v != UNSET {
        return Tier::from_u8(v);
    }
    let t = tier_from_env().unwrap_or_else(|e| panic!("{e}"));
    ACTIVE.store(t as u8, Ordering::Relaxed);
    t
}

/// Runs this process's bf16 products on `requested` or the best tier below it that the
/// machine has; returns the tier now in use.
pub fn force_tier(requested: Tier) -> Tier {
    let t = lower(hardware_tier(), requested);
    ACTIVE.store(t as u8, Ordering::Relaxed);
    t
}
